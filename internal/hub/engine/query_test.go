package engine

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestQueryTwins(t *testing.T) {
	e, _ := newEventEngine(t) // dev1 with module mod1
	for _, id := range []string{"dev3", "dev2"} {
		_, herr := e.PutDevice(id, Device{}, "")
		require.Nil(t, herr, "put %s", id)
	}
	_, herr := e.PutModule("dev1", "a", Module{}, "")
	require.Nil(t, herr)
	_, herr = e.PutModule("dev3", "m", Module{}, "")
	require.Nil(t, herr)
	mustPatch(t, e, "dev2", "", `{"tags":{"site":"berlin","n":1.50}}`)

	devs := e.QueryTwins(CollectionDevices)
	require.Len(t, devs, 3)
	var ids []string
	for _, d := range devs {
		ids = append(ids, d["deviceId"].(string))
		assert.NotContains(t, d, "moduleId")
	}
	assert.Equal(t, []string{"dev1", "dev2", "dev3"}, ids, "device twins in id order")

	// Each document is the twin GET /twins/{id} returns, numbers kept as
	// json.Number.
	tw, herr := e.GetTwin("dev2", "")
	require.Nil(t, herr)
	want, err := json.Marshal(tw)
	require.NoError(t, err)
	got, err := json.Marshal(devs[1])
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got))
	tags := devs[1]["tags"].(map[string]any)
	assert.Equal(t, json.Number("1.50"), tags["n"], "numbers decode as json.Number")
	assert.Equal(t, json.Number("2"), devs[0]["version"])

	mods := e.QueryTwins(CollectionModules)
	var keys [][2]string
	for _, m := range mods {
		keys = append(keys, [2]string{m["deviceId"].(string), m["moduleId"].(string)})
	}
	assert.Equal(t, [][2]string{{"dev1", "a"}, {"dev1", "mod1"}, {"dev3", "m"}}, keys, "module twins by device, then module")

	assert.Empty(t, e.QueryTwins(CollectionJobs), "no jobs yet")
	assert.Empty(t, e.QueryTwins("nope"))
}

// A query sees a document of its own: changing it leaves the twin alone.
func TestQueryTwinsCopies(t *testing.T) {
	e, _ := newEventEngine(t)
	mustPatch(t, e, "dev1", "", `{"tags":{"site":"berlin"}}`)
	docs := e.QueryTwins(CollectionDevices)
	require.Len(t, docs, 1)
	docs[0]["tags"].(map[string]any)["site"] = "paris"
	tw, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	assert.JSONEq(t, `{"site":"berlin"}`, string(tw.Tags))
}
