package service

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeTwin feeds a hub's twin answer to the client's decoder: it
// must decode or fail without panicking, and a twin it decodes must encode
// and decode again to the same twin.
func FuzzDecodeTwin(f *testing.F) {
	for _, s := range []string{
		`{"deviceId":"dev1","etag":"AAAAAAAAAAE=","version":2,"properties":{"desired":{"$metadata":{"$lastUpdated":"2026-12-05T10:00:00.0000000Z"},"$version":1},"reported":{"$version":1}}}`,
		`{"deviceId":"d","moduleId":"m","tags":{"site":{"city":"lyon"}},"properties":{"desired":{"a":[1,2],"$version":3},"reported":{"x":null,"$version":"4"}}}`,
		`{"properties":{"desired":null}}`, `{"properties":[]}`, `{"version":1e400}`, `{"x509Thumbprint":{"primaryThumbprint":1}}`,
		`{"statusUpdateTime":"not a time","lastActivityTime":"0001-01-01T00:00:00"}`, `null`, `[]`, `{`, ``,
		`{"capabilities":{"iotEdge":true},"parentScopes":["a"],"deviceScope":"s","modelId":"dtmi:a:b;1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var tw Twin
		if err := json.Unmarshal(body, &tw); err != nil {
			return
		}
		b, err := json.Marshal(tw)
		require.NoError(t, err, "a decoded twin does not encode: %+v", tw)
		var again Twin
		require.NoError(t, json.Unmarshal(b, &again), "the encoded twin does not decode: %s", b)
		require.Equal(t, tw.ETag, again.ETag)
		require.Equal(t, tw.Version, again.Version)
		require.Equal(t, tw.Desired.Version, again.Desired.Version)
		require.Equal(t, len(tw.Desired.Properties), len(again.Desired.Properties))
		require.Equal(t, len(tw.Tags), len(again.Tags))
	})
}
