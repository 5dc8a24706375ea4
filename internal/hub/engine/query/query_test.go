package query

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// decode parses JSON the way the hub hands documents to the package.
func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m))
	return m
}

// twin builds a device twin shaped like the docs' sample twin.
func twin(t testing.TB, id, region, plant, connectivity, status string, freq int) map[string]any {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"deviceId":        id,
		"etag":            "AAAAAAAAAAc=",
		"status":          "enabled",
		"connectionState": "Disconnected",
		"version":         2,
		"tags":            map[string]any{"location": map[string]any{"region": region, "plant": plant}},
		"properties": map[string]any{
			"desired": map[string]any{
				"telemetryConfig": map[string]any{"configId": "db00ebf5", "sendFrequencyInSecs": freq},
				"$version":        4,
			},
			"reported": map[string]any{
				"connectivity":    map[string]any{"type": connectivity},
				"telemetryConfig": map[string]any{"configId": "db00ebf5", "sendFrequencyInSecs": freq, "status": status},
				"$version":        7,
			},
		},
	})
	require.NoError(t, err)
	return decode(t, string(b))
}

// fleet is six twins: three Success, two Pending, one Error, as in the
// docs' GROUP BY example.
func fleet(t testing.TB) []map[string]any {
	return []map[string]any{
		twin(t, "d1", "US", "Redmond43", "cellular", "Success", 300),
		twin(t, "d2", "US", "Redmond43", "wifi", "Pending", 30),
		twin(t, "d3", "EU", "Berlin1", "wired", "Success", 60),
		twin(t, "d4", "US", "Redmond44", "wired", "Error", 120),
		twin(t, "d5", "EU", "Berlin1", "cellular", "Success", 600),
		twin(t, "d6", "US", "Redmond43", "wifi", "Pending", 90),
	}
}

func run(t *testing.T, sql string, docs []map[string]any) []any {
	t.Helper()
	q, err := Parse(sql)
	require.NoError(t, err, sql)
	rows, err := q.Run(docs)
	require.NoError(t, err)
	return rows
}

func ids(t *testing.T, rows []any) []string {
	t.Helper()
	out := []string{}
	for _, r := range rows {
		m, ok := r.(map[string]any)
		require.True(t, ok)
		id, _ := m["deviceId"].(string)
		out = append(out, id)
	}
	return out
}

func TestDocsExamples(t *testing.T) {
	docs := fleet(t)
	tests := []struct {
		sql  string
		want []string
	}{
		{"SELECT * FROM devices", []string{"d1", "d2", "d3", "d4", "d5", "d6"}},
		{"SELECT * FROM devices WHERE tags.location.region = 'US'", []string{"d1", "d2", "d4", "d6"}},
		{"SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
			[]string{"d1", "d4", "d6"}},
		{"SELECT * FROM devices WHERE properties.reported.connectivity.type IN ['wired', 'wifi']", []string{"d2", "d3", "d4", "d6"}},
		{"SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)", []string{"d1", "d2", "d3", "d4", "d5", "d6"}},
		{"SELECT * FROM devices WHERE is_defined(properties.reported.nothing)", []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.sql, func(t *testing.T) {
			assert.Equal(t, tc.want, ids(t, run(t, tc.sql, docs)))
		})
	}
}

func TestGroupByDocsExample(t *testing.T) {
	rows := run(t, `SELECT properties.reported.telemetryConfig.status AS status,
		COUNT() AS numberOfDevices
	FROM devices
	GROUP BY properties.reported.telemetryConfig.status`, fleet(t))
	assert.Equal(t, []any{
		map[string]any{"status": "Success", "numberOfDevices": json.Number("3")},
		map[string]any{"status": "Pending", "numberOfDevices": json.Number("2")},
		map[string]any{"status": "Error", "numberOfDevices": json.Number("1")},
	}, rows)
}

func TestAggregates(t *testing.T) {
	docs := fleet(t)
	rows := run(t, "SELECT COUNT() AS totalNumberOfDevices FROM devices", docs)
	assert.Equal(t, []any{map[string]any{"totalNumberOfDevices": json.Number("6")}}, rows)

	rows = run(t, "SELECT COUNT() AS n FROM devices WHERE tags.location.region = 'nowhere'", docs)
	assert.Equal(t, []any{map[string]any{"n": json.Number("0")}}, rows, "an aggregate without GROUP BY gives one row")

	rows = run(t, "SELECT COUNT() FROM devices", docs)
	assert.Equal(t, []any{map[string]any{"$1": json.Number("6")}}, rows)

	rows = run(t, `SELECT tags.location.region AS region, COUNT() AS n,
		SUM(properties.reported.telemetryConfig.sendFrequencyInSecs) AS total,
		AVG(properties.reported.telemetryConfig.sendFrequencyInSecs) AS mean,
		MIN(properties.reported.telemetryConfig.sendFrequencyInSecs) AS lo,
		MAX(properties.reported.telemetryConfig.sendFrequencyInSecs) AS hi
		FROM devices GROUP BY tags.location.region`, docs)
	assert.Equal(t, []any{
		map[string]any{"region": "US", "n": json.Number("4"), "total": json.Number("540"), "mean": json.Number("135"), "lo": json.Number("30"), "hi": json.Number("300")},
		map[string]any{"region": "EU", "n": json.Number("2"), "total": json.Number("660"), "mean": json.Number("330"), "lo": json.Number("60"), "hi": json.Number("600")},
	}, rows)

	rows = run(t, "SELECT TOP 1 tags.location.region AS region, COUNT() AS n FROM devices GROUP BY tags.location.region", docs)
	assert.Len(t, rows, 1)

	// Documents without the GROUP BY attribute form one group whose row
	// leaves the attribute out.
	extra := append(fleet(t), decode(t, `{"deviceId":"bare"}`))
	rows = run(t, "SELECT tags.location.region AS region, COUNT() AS n FROM devices GROUP BY tags.location.region", extra)
	require.Len(t, rows, 3)
	assert.Equal(t, map[string]any{"n": json.Number("1")}, rows[2])

	// Numbers group by value, whatever their spelling.
	nums := []map[string]any{decode(t, `{"v":1}`), decode(t, `{"v":1.0}`), decode(t, `{"v":"1"}`)}
	rows = run(t, "SELECT v, COUNT() AS n FROM devices GROUP BY v", nums)
	assert.Equal(t, []any{
		map[string]any{"v": json.Number("1"), "n": json.Number("2")},
		map[string]any{"v": "1", "n": json.Number("1")},
	}, rows)
}

func TestProjections(t *testing.T) {
	docs := fleet(t)
	rows := run(t, "SELECT deviceId, properties.reported.telemetryConfig.status AS s, tags.location FROM devices WHERE deviceId = 'd1'", docs)
	assert.Equal(t, []any{map[string]any{
		"deviceId": "d1",
		"s":        "Success",
		"location": map[string]any{"region": "US", "plant": "Redmond43"},
	}}, rows)

	rows = run(t, "SELECT properties.reported.telemetryConfig.sendFrequencyInSecs FROM devices WHERE deviceId = 'd2'", docs)
	assert.Equal(t, []any{map[string]any{"sendFrequencyInSecs": json.Number("30")}}, rows)

	// An undefined projected attribute is left out of the row.
	rows = run(t, "SELECT deviceId, properties.reported.missing AS m FROM devices WHERE deviceId = 'd3'", docs)
	assert.Equal(t, []any{map[string]any{"deviceId": "d3"}}, rows)

	// SELECT * returns the documents themselves.
	rows = run(t, "SELECT * FROM devices WHERE deviceId = 'd4'", docs)
	require.Len(t, rows, 1)
	assert.Equal(t, docs[3], rows[0])
}

func TestTop(t *testing.T) {
	docs := fleet(t)
	assert.Equal(t, []string{"d1", "d2"}, ids(t, run(t, "SELECT TOP 2 * FROM devices", docs)))
	assert.Equal(t, []string{"d3", "d5"}, ids(t, run(t, "select top 5 * from devices where tags.location.region = 'EU'", docs)))
	assert.Empty(t, run(t, "SELECT TOP 0 * FROM devices", docs))
	assert.Len(t, run(t, "SELECT TOP 1 deviceId FROM devices", docs), 1)
	q, err := Parse("SELECT TOP 7 * FROM devices")
	require.NoError(t, err)
	assert.Equal(t, 7, q.Top())
	q, err = Parse("SELECT * FROM devices")
	require.NoError(t, err)
	assert.Equal(t, -1, q.Top())
}

func TestCaseInsensitiveKeywords(t *testing.T) {
	docs := fleet(t)
	for _, sql := range []string{
		"select * from devices where tags.location.region = 'EU' and NOT (deviceId = 'd3')",
		"SeLeCt * FrOm Devices WhErE tags.location.region = 'EU' AnD not(deviceId = 'd3')",
		"SELECT * FROM DEVICES WHERE Is_Defined(tags.location) AND tags.location.region IN ['EU'] AND deviceId NiN ['d3']",
	} {
		assert.Equal(t, []string{"d5"}, ids(t, run(t, sql, docs)), sql)
	}
	q, err := Parse("select * from DEVICES.MODULES")
	require.NoError(t, err)
	assert.Equal(t, CollectionModules, q.From())
}

func match(t *testing.T, sql string, doc map[string]any) bool {
	t.Helper()
	q, err := Parse("SELECT * FROM devices WHERE " + sql)
	require.NoError(t, err, sql)
	ok, err := q.Match(doc)
	require.NoError(t, err)
	return ok
}

var typesDoc = `{
	"n": 5, "f": 2.5, "neg": -3, "s": "hello", "e": "", "t": true, "fa": false, "nul": null,
	"arr": [1, 2], "obj": {"a": 1}, "o2": {"a": 1}, "it's": 1
}`

func TestOperators(t *testing.T) {
	doc := decode(t, typesDoc)
	tests := []struct {
		cond string
		want bool
	}{
		// comparison
		{"n = 5", true}, {"n = 5.0", true}, {"n = 0x5", true}, {"n != 5", false}, {"n <> 4", true},
		{"n < 6", true}, {"n <= 5", true}, {"n > 5", false}, {"n >= 5", true}, {"neg < 0", true},
		{"neg = -3", true}, {"f > 2", true}, {"f = 2.5e0", true}, {"f = .25e1", true},
		{"s = 'hello'", true}, {"s = \"hello\"", true}, {"s = 'Hello'", false},
		{"s < 'world'", true}, {"s > 'hell'", true}, {"e = ''", true},
		{"t = true", true}, {"fa = false", true}, {"t != false", true}, {"nul = null", true}, {"nul != null", false},
		// arithmetic
		{"n + 1 = 6", true}, {"n - 1 = 4", true}, {"n * 2 = 10", true}, {"n / 2 = 2.5", true},
		{"n % 2 = 1", true}, {"1 + 2 * 3 = 7", true}, {"(1 + 2) * 3 = 9", true}, {"-n = -5", true},
		{"10 - 2 - 3 = 5", true}, {"n / 0 = 0", false}, {"n % 0 = 0", false}, {"+n = 5", true},
		// logic
		{"n = 5 AND s = 'hello'", true}, {"n = 5 AND s = 'x'", false}, {"n = 4 OR s = 'hello'", true},
		{"n = 4 OR s = 'x'", false}, {"NOT n = 4", true}, {"NOT (n = 5)", false},
		{"n = 4 OR n = 5 AND s = 'x'", false}, {"(n = 4 OR n = 5) AND s = 'hello'", true},
		{"NOT NOT n = 5", true}, {"true", true}, {"false", false},
		// IN / NIN
		{"s IN ['a', 'hello']", true}, {"s IN ['a']", false}, {"n IN [1, 5]", true}, {"n IN [-5, 5.0]", true},
		{"s NIN ['a', 'b']", true}, {"s NIN ['hello']", false}, {"nul IN [null]", true}, {"t IN [true]", true},
		{"s IN []", false}, {"s NIN []", true}, {"n IN ['5']", false}, {"obj IN [1]", false},
		// escapes and unusual names
		{"s = 'hel\\u006Co'", true}, {"'it\\'s' = \"it's\"", true}, {"'a\\\\b' = 'a\\\\b'", true},
		{"'\\\"' = '\"'", true},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, match(t, tc.cond, doc), tc.cond)
	}
}

func TestTypeMismatchIsUndefined(t *testing.T) {
	doc := decode(t, typesDoc)
	// Comparing different types, objects or arrays, or a missing
	// attribute is undefined: neither the condition nor its negation
	// matches.
	for _, cond := range []string{
		"n = '5'", "s = 5", "t = 1", "nul = 0", "nul < 1", "t < fa",
		"obj = o2", "arr = arr", "obj = null",
		"missing = 1", "missing = null", "missing != 1", "missing.deeper = 1", "s.x = 1",
		"n + 's' = 5", "s + 's' = 'ss'", "t * 2 = 2", "-s = 1",
		"missing IN [1]", "missing NIN [1]",
		"STARTSWITH(n, 'x')", "ENDSWITH(s, 1)", "CONTAINS(missing, 'a')",
		"n", "s", "nul", "obj", "undefined", "n AND true", "NOT s",
	} {
		assert.False(t, match(t, cond, doc), cond)
		assert.False(t, match(t, "NOT ("+cond+")", doc), "NOT (%s)", cond)
	}
	// Three-valued logic: false AND undefined is false, true OR undefined is true.
	assert.True(t, match(t, "NOT (missing = 1 AND false)", doc))
	assert.True(t, match(t, "missing = 1 OR true", doc))
	assert.False(t, match(t, "missing = 1 OR false", doc))
}

func TestFunctions(t *testing.T) {
	doc := decode(t, typesDoc)
	tests := []struct {
		cond string
		want bool
	}{
		{"IS_DEFINED(n)", true}, {"IS_DEFINED(nul)", true}, {"IS_DEFINED(missing)", false}, {"IS_DEFINED(obj.a)", true},
		{"IS_NULL(nul)", true}, {"IS_NULL(n)", false}, {"IS_NULL(missing)", false},
		{"IS_BOOL(t)", true}, {"IS_BOOL(fa)", true}, {"IS_BOOL(s)", false},
		{"IS_NUMBER(n)", true}, {"IS_NUMBER(f)", true}, {"IS_NUMBER(s)", false}, {"IS_NUMBER(n + 1)", true},
		{"IS_STRING(s)", true}, {"IS_STRING(e)", true}, {"IS_STRING(n)", false},
		{"IS_OBJECT(obj)", true}, {"IS_OBJECT(arr)", false}, {"IS_OBJECT(nul)", false},
		{"IS_ARRAY(arr)", true}, {"IS_ARRAY(obj)", false},
		{"IS_PRIMITIVE(s)", true}, {"IS_PRIMITIVE(n)", true}, {"IS_PRIMITIVE(t)", true}, {"IS_PRIMITIVE(nul)", true},
		{"IS_PRIMITIVE(obj)", false}, {"IS_PRIMITIVE(arr)", false}, {"IS_PRIMITIVE(missing)", false},
		{"STARTSWITH(s, 'he')", true}, {"STARTSWITH(s, 'lo')", false}, {"STARTSWITH(s, '')", true},
		{"ENDSWITH(s, 'lo')", true}, {"ENDSWITH(s, 'he')", false},
		{"CONTAINS(s, 'ell')", true}, {"CONTAINS(s, 'z')", false},
		{"startswith(s, 'h') AND endswith(s, 'o')", true},
		{"NOT IS_DEFINED(missing)", true},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, match(t, tc.cond, doc), tc.cond)
	}
}

func TestModuleQueries(t *testing.T) {
	mods := []map[string]any{
		decode(t, `{"deviceId":"d1","moduleId":"m1","properties":{"reported":{"status":"scanning"}}}`),
		decode(t, `{"deviceId":"d1","moduleId":"m2","properties":{"reported":{"status":"idle"}}}`),
		decode(t, `{"deviceId":"d2","moduleId":"m1","properties":{"reported":{"status":"scanning"}}}`),
		decode(t, `{"deviceId":"d3","moduleId":"m1","properties":{"reported":{"status":"scanning"}}}`),
	}
	q, err := Parse("SELECT * FROM devices.modules WHERE properties.reported.status = 'scanning' AND deviceId IN ['d1', 'd2']")
	require.NoError(t, err)
	assert.Equal(t, CollectionModules, q.From())
	rows, err := q.Run(mods)
	require.NoError(t, err)
	assert.Equal(t, []any{mods[0], mods[2]}, rows)

	// The collection prefix may qualify attribute names.
	rows = run(t, "SELECT * FROM devices.modules WHERE devices.deviceId = 'd1' AND devices.modules.moduleId = 'm2'", mods)
	assert.Equal(t, []any{mods[1]}, rows)

	rows = run(t, "SELECT moduleId, COUNT() AS n FROM devices.modules GROUP BY moduleId", mods)
	assert.Equal(t, []any{
		map[string]any{"moduleId": "m1", "n": json.Number("3")},
		map[string]any{"moduleId": "m2", "n": json.Number("1")},
	}, rows)
}

func TestJobQueries(t *testing.T) {
	jobs := []map[string]any{
		decode(t, `{"deviceId":"myDeviceId","jobId":"j1","jobType":"scheduleTwinUpdate","status":"completed","createdDateTimeUtc":"2016-09-29T18:18:56.7787107Z"}`),
		decode(t, `{"deviceId":"myDeviceId","jobId":"j2","jobType":"scheduleDeviceMethod","status":"running","createdDateTimeUtc":"2016-08-29T18:18:56Z"}`),
		decode(t, `{"deviceId":"other","jobId":"j1","jobType":"scheduleTwinUpdate","status":"completed","createdDateTimeUtc":"2016-09-29T18:18:56Z"}`),
	}
	q, err := Parse(`SELECT * FROM devices.jobs
		WHERE devices.jobs.deviceId = 'myDeviceId'
		AND devices.jobs.jobType = 'scheduleTwinUpdate'
		AND devices.jobs.status = 'completed'
		AND devices.jobs.createdDateTimeUtc > '2016-09-01'`)
	require.NoError(t, err)
	assert.Equal(t, CollectionJobs, q.From())
	rows, err := q.Run(jobs)
	require.NoError(t, err)
	assert.Equal(t, []any{jobs[0]}, rows)

	rows = run(t, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'", jobs)
	assert.Equal(t, []any{jobs[0], jobs[2]}, rows)
	rows = run(t, "SELECT * FROM devices.jobs WHERE jobId = 'j2'", jobs)
	assert.Equal(t, []any{jobs[1]}, rows)
}

func TestMatch(t *testing.T) {
	q, err := Parse("SELECT * FROM devices")
	require.NoError(t, err)
	ok, err := q.Match(nil)
	require.NoError(t, err)
	assert.True(t, ok, "no WHERE matches everything")

	q, err = Parse("SELECT * FROM devices WHERE NOT IS_DEFINED(x)")
	require.NoError(t, err)
	ok, err = q.Match(nil)
	require.NoError(t, err)
	assert.True(t, ok, "a nil document is empty")

	// float64 and int values (decoded without UseNumber) work too.
	q, err = Parse("SELECT * FROM devices WHERE a = 1.5 AND b = 2")
	require.NoError(t, err)
	ok, err = q.Match(map[string]any{"a": 1.5, "b": 2})
	require.NoError(t, err)
	assert.True(t, ok)
}

func TestErrors(t *testing.T) {
	tests := []string{
		"",
		"   ",
		"SELECT",
		"SELECT *",
		"SELECT * FROM",
		"SELECT * FROM things",
		"SELECT * FROM devices.twins",
		"SELECT * FROM devices WHERE",
		"SELECT * FROM devices WHERE a =",
		"SELECT * FROM devices WHERE (a = 1",
		"SELECT * FROM devices WHERE a = 1)",
		"SELECT * FROM devices WHERE a = 'unterminated",
		"SELECT * FROM devices WHERE a = 'bad \\n escape'",
		"SELECT * FROM devices WHERE a = '\\u12'",
		"SELECT * FROM devices WHERE a = 0x",
		"SELECT * FROM devices WHERE a = 12abc",
		"SELECT * FROM devices WHERE a = 1e999",
		"SELECT * FROM devices WHERE a ! 1",
		"SELECT * FROM devices WHERE a = 1 extra",
		"SELECT * FROM devices WHERE a IN 'x'",
		"SELECT * FROM devices WHERE a IN [b]",
		"SELECT * FROM devices WHERE a IN [1,]",
		"SELECT * FROM devices WHERE a IN [- 'x']",
		"SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'x')",
		"SELECT * FROM devices WHERE LOWER(deviceId) = 'x'",
		"SELECT * FROM devices WHERE ABS(a) = 1",
		"SELECT * FROM devices WHERE IS_DEFINED()",
		"SELECT * FROM devices WHERE IS_DEFINED(a, b)",
		"SELECT * FROM devices WHERE STARTSWITH(a)",
		"SELECT * FROM devices WHERE COUNT() = 1",
		"SELECT * FROM devices WHERE a. = 1",
		"SELECT * FROM devices WHERE select = 1",
		"SELECT * FROM devices WHERE a = #",
		"SELECT TOP * FROM devices",
		"SELECT TOP -1 * FROM devices",
		"SELECT TOP 1.5 * FROM devices",
		"SELECT TOP 99999999999 * FROM devices",
		"SELECT a AS FROM devices",
		"SELECT a AS b AS c FROM devices",
		"SELECT a, FROM devices",
		"SELECT a AS x, b AS x FROM devices",
		"SELECT LOWER(a) AS x FROM devices",
		"SELECT COUNT(a) AS x FROM devices",
		"SELECT SUM() AS x FROM devices",
		"SELECT * FROM devices GROUP BY a",
		"SELECT a, COUNT() AS n FROM devices GROUP BY b",
		"SELECT a, COUNT() AS n FROM devices",
		"SELECT a AS x FROM devices GROUP",
		"SELECT deviceId FROM devices.jobs",
		"SELECT COUNT() AS n FROM devices.jobs",
		"DELETE FROM devices",
		"SELECT * FROM devices WHERE a = 1 GROUP BY",
		"SELECT * FROM devices WHERE a = 1 ORDER BY a",
		"SELECT * FROM devices WHERE " + strings.Repeat("(", MaxDepth+1) + "a = 1" + strings.Repeat(")", MaxDepth+1),
		"SELECT * FROM devices WHERE " + strings.Repeat("NOT ", MaxDepth+1) + "a = 1",
		"SELECT * FROM devices WHERE " + strings.Repeat("-", MaxDepth+1) + "1 = 1",
		"SELECT * FROM devices WHERE a" + strings.Repeat(".a", MaxDepth) + " = 1",
		"SELECT * FROM devices WHERE a IN [" + strings.Repeat("1,", MaxListLength) + "1]",
		"SELECT * FROM devices WHERE a = '" + strings.Repeat("x", MaxQueryLength) + "'",
		"SELECT * FROM devices WHERE a = '\xff",
	}
	for _, sql := range tests {
		q, err := Parse(sql)
		require.Error(t, err, sql)
		assert.Nil(t, q)
		assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), err.Error())
		var qe *Error
		require.True(t, errors.As(err, &qe), sql)
		assert.NotEmpty(t, qe.Msg)
		assert.GreaterOrEqual(t, qe.Pos, 0)
		assert.LessOrEqual(t, qe.Pos, max(len(sql), MaxQueryLength))
	}
}

func TestLimitsAccepted(t *testing.T) {
	ok := []string{
		"SELECT * FROM devices WHERE " + strings.Repeat("(", MaxDepth-2) + "a = 1" + strings.Repeat(")", MaxDepth-2),
		"SELECT * FROM devices WHERE a IN [" + strings.Repeat("1,", MaxListLength-1) + "1]",
		"SELECT * FROM devices WHERE a = '" + strings.Repeat("x", MaxQueryLength-40) + "'",
		// Long flat chains are not nesting.
		"SELECT * FROM devices WHERE a = 1" + strings.Repeat(" OR a = 1", 500),
		"SELECT * FROM devices WHERE 1" + strings.Repeat(" + 1", 1000) + " = 1001",
		// Reserved words may follow a dot in a path.
		"SELECT * FROM devices WHERE tags.select.from = 1 AND properties.reported.in = 2",
		"SELECT tags.group AS g, COUNT() AS n FROM devices GROUP BY tags.group",
		"SELECT * FROM devices WHERE properties.desired.$version = 4",
	}
	for _, sql := range ok {
		_, err := Parse(sql)
		assert.NoError(t, err, sql[:min(len(sql), 80)])
	}
	assert.Equal(t, []string{"d1"}, ids(t, run(t, "SELECT * FROM devices WHERE 1"+strings.Repeat(" + 1", 1000)+" = 1001 AND deviceId = 'd1'", fleet(t))))
	assert.Len(t, run(t, "SELECT * FROM devices WHERE properties.desired.$version = 4", fleet(t)), 6)
}

func TestErrorPosition(t *testing.T) {
	_, err := Parse("SELECT * FROM devices WHERE a = #")
	var qe *Error
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, 32, qe.Pos)

	_, err = Parse("SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'x')")
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, 28, qe.Pos)
	assert.Contains(t, qe.Msg, "STARTS_WITH")
}

func TestConcurrentRun(t *testing.T) {
	q, err := Parse("SELECT tags.location.region AS r, COUNT() AS n FROM devices WHERE deviceId != 'd9' GROUP BY tags.location.region")
	require.NoError(t, err)
	docs := fleet(t)
	want, err := q.Run(docs)
	require.NoError(t, err)
	results := make(chan []any, 8)
	for range 8 {
		go func() {
			rows, _ := q.Run(docs)
			results <- rows
		}()
	}
	for range 8 {
		assert.Equal(t, want, <-results)
	}
}
