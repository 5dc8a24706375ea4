package device

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseDeviceTwin feeds the hub's answer to a twin GET (and a desired
// patch) to the client's parsers: they must give sections whose properties
// re-encode as JSON, or an "iothub: " error; and a diff between any two
// parsed sections, applied as a merge patch, must give the second.
func FuzzParseDeviceTwin(f *testing.F) {
	for _, s := range []string{
		`{"desired":{"$version":1},"reported":{"$version":1}}`,
		`{"desired":{"a":1,"b":{"c":"x"},"$version":5},"reported":{"iothubDM":{"reboot":{"lastReboot":"2026-12-05T10:00:00Z"}},"$version":3}}`,
		`{"desired":{"a":[1,2,{"b":null}],"$version":2,"$metadata":{"$lastUpdated":"x"}},"reported":{}}`,
		`{}`, `null`, `[]`, `{"desired":1}`, `{"desired":{"$version":"1"}}`, `{"desired":{"$version":1.5}}`,
		`{"desired":{"$version":1e400}}`, `{"desired":{"a":1}} x`, ``, `{"desired":{"a":1,"a":2,"$version":1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		desired, reported, err := parseDeviceTwin(body)
		if err != nil {
			require.True(t, strings.HasPrefix(err.Error(), "iothub: "), "message %q", err)
			return
		}
		for _, s := range []section{desired, reported} {
			p := toProperties(s)
			for k, v := range p.Properties {
				require.True(t, json.Valid(v), "property %q: %q", k, v)
			}
		}
		// Diff then merge round-trips.
		patch := diffDocs(reported.props, desired.props)
		got := mergePatch(clone(reported.props), patch)
		want, _ := json.Marshal(desired.props)
		have, _ := json.Marshal(got)
		// encoding/json sorts keys and keeps json.Number as sent, so equal
		// documents encode to equal bytes.
		require.Equal(t, string(want), string(have), "diff %v applied to %v", patch, reported.props)
	})
}

// clone deep-copies a decoded JSON object.
func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	v, _ := decodeJSON(b)
	out, _ := v.(map[string]any)
	if out == nil {
		out = map[string]any{}
	}
	return out
}
