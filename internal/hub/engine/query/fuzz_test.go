package query

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzParse parses arbitrary text and runs what parses over a few fixed
// documents. Nothing may panic or hang, every error is an *Error whose
// text starts with "iothub: ", and results respect TOP and the number of
// documents.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"SELECT * FROM devices",
		"SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
		"SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM devices GROUP BY properties.reported.telemetryConfig.status",
		"SELECT TOP 2 deviceId, tags.location AS loc FROM devices WHERE NOT IS_DEFINED(tags.x) OR n % 2 = 1",
		"select * from devices.modules where devices.deviceId IN ['d1', 'd2'] and moduleId nin [\"m\"]",
		"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'",
		"SELECT * FROM devices WHERE STARTSWITH(deviceId, 'd') AND ENDSWITH(deviceId, '\\u0031')",
		"SELECT SUM(n) AS s, AVG(n) AS a, MIN(n), MAX(n) FROM devices",
		"SELECT * FROM devices WHERE ((-0x1F + .5e1) * 2 / 3 <> n) AND IS_PRIMITIVE(arr)",
	} {
		f.Add(s)
	}
	var docs []map[string]any
	for _, s := range []string{
		`{"deviceId":"d1","n":1,"tags":{"location":{"region":"US"}},"properties":{"reported":{"telemetryConfig":{"status":"Success","sendFrequencyInSecs":300}}}}`,
		`{"deviceId":"d2","moduleId":"m","n":2.5,"arr":[1,{"a":null}],"tags":{"x":null}}`,
		`{"deviceId":"d3","jobId":"j1","n":"3","obj":{"a":{"b":true}}}`,
		`{}`,
	} {
		docs = append(docs, decode(f, s))
	}
	f.Fuzz(func(t *testing.T, sql string) {
		q, err := Parse(sql)
		if err != nil {
			if q != nil {
				t.Fatalf("Parse(%q) returned a query and an error", sql)
			}
			if !strings.HasPrefix(err.Error(), "iothub: ") {
				t.Fatalf("Parse(%q): error %q lacks the iothub: prefix", sql, err)
			}
			if _, ok := err.(*Error); !ok {
				t.Fatalf("Parse(%q): error %T is not *Error", sql, err)
			}
			return
		}
		for _, d := range docs {
			if _, err := q.Match(d); err != nil {
				t.Fatalf("Match(%q): %v", sql, err)
			}
		}
		rows, err := q.Run(docs)
		if err != nil {
			t.Fatalf("Run(%q): %v", sql, err)
		}
		if q.Top() >= 0 && len(rows) > q.Top() {
			t.Fatalf("Run(%q): %d rows exceed TOP %d", sql, len(rows), q.Top())
		}
		if len(rows) > len(docs) && !(len(docs) == 0 && len(rows) == 1) {
			t.Fatalf("Run(%q): %d rows from %d documents", sql, len(rows), len(docs))
		}
		if _, err := json.Marshal(rows); err != nil {
			t.Fatalf("Run(%q): rows do not encode as JSON: %v", sql, err)
		}
	})
}
