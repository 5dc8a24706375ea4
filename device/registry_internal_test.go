package device

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// statusHandler returns a handler that answers with status.
func statusHandler(status int) MethodHandler {
	return func(context.Context, *MethodRequest) (*MethodResponse, error) {
		return &MethodResponse{Status: status}, nil
	}
}

// answer runs h and returns its status; 0 for a nil h.
func answer(t *testing.T, h MethodHandler) int {
	t.Helper()
	if h == nil {
		return 0
	}
	r, err := h(context.Background(), &MethodRequest{})
	require.NoError(t, err)
	return r.Status
}

// TestMethodTable registers, replaces and removes handlers across the
// move from the slice to the map, and checks every lookup against a map.
func TestMethodTable(t *testing.T) {
	var tab methodTable
	want := map[string]int{}
	check := func(step string) {
		t.Helper()
		assert.Equal(t, len(want), tab.len(), step)
		for i := range 2 * (maxFewHandlers + 2) {
			name := fmt.Sprint("m", i)
			assert.Equal(t, want[name], answer(t, tab.get(name)), "%s: %s", step, name)
		}
	}
	var none *methodTable
	assert.Equal(t, 0, none.len())
	assert.Nil(t, none.get("m0"))
	check("empty")
	tab.set("m0", nil) // removing what is not there
	check("remove absent")
	for i := range maxFewHandlers + 3 {
		name := fmt.Sprint("m", i)
		tab.set(name, statusHandler(200+i))
		want[name] = 200 + i
		check("add " + name)
		if i == maxFewHandlers-1 {
			assert.Nil(t, tab.many, "a slice up to maxFewHandlers")
		}
	}
	assert.NotNil(t, tab.many, "a map beyond maxFewHandlers")
	tab.set("m3", statusHandler(503))
	want["m3"] = 503
	check("replace")
	tab.set("m3", nil)
	delete(want, "m3")
	check("remove from the map")

	var small methodTable
	for i := range 3 {
		small.set(fmt.Sprint("m", i), statusHandler(200+i))
	}
	small.set("m1", statusHandler(404))
	small.set("m0", nil)
	assert.Equal(t, 2, small.len())
	assert.Nil(t, small.get("m0"))
	assert.Equal(t, 404, answer(t, small.get("m1")))
	assert.Equal(t, 202, answer(t, small.get("m2")))
	assert.Nil(t, small.many)
}
