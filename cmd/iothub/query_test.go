package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// queryHub is a hub with five devices tagged by site (berlin: q0, q2, q4;
// paris: q1, q3), a CA file trusting it and its service connection string.
func queryHub(t *testing.T) (hub *iothubtest.Server, caFile, svcCS string) {
	t.Helper()
	hub = iothubtest.NewServer(t, nil)
	for i := range 5 {
		id := fmt.Sprintf("q%d", i)
		hub.AddDevice(t, id)
		site := "berlin"
		if i%2 == 1 {
			site = "paris"
		}
		hub.UpdateTags(t, id, map[string]any{"site": site, "n": i})
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
	return hub, caFile, hub.ServiceConnectionString()
}

// queryLines decodes JSON lines, each one compact JSON document.
func queryLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var docs []map[string]any
	for _, line := range strings.SplitAfter(out, "\n") {
		if line == "" {
			continue
		}
		require.True(t, strings.HasSuffix(line, "\n"), "line %q ends the output without a newline", line)
		var c bytes.Buffer
		require.NoError(t, json.Compact(&c, []byte(line)), "line %q is not JSON", line)
		require.Equal(t, c.String()+"\n", line, "line is not compact JSON")
		var d map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &d))
		docs = append(docs, d)
	}
	return docs
}

func deviceIDs(docs []map[string]any) []any {
	ids := make([]any, len(docs))
	for i, d := range docs {
		ids[i] = d["deviceId"]
	}
	return ids
}

func TestQueryCommand(t *testing.T) {
	hub, caFile, svcCS := queryHub(t)
	svc, err := auth.ParseServiceConnectionString(svcCS)
	require.NoError(t, err)
	base := []string{"--connection-string", svcCS, "--ca-file", caFile}
	all := []any{"q0", "q1", "q2", "q3", "q4"}

	for _, tc := range []struct {
		name       string
		env        string
		args       []string
		noBaseArgs bool
		code       int
		ids        []any            // deviceId of each line, when set
		docs       []map[string]any // the lines, when set
		stderrHas  []string
	}{
		{name: "all twins, default page size", args: []string{"SELECT * FROM devices"}, ids: all},
		{name: "all twins, pages of 2", args: []string{"--page-size", "2", "SELECT * FROM devices"}, ids: all},
		{name: "pages of 1, json", args: []string{"--page-size", "1", "--output", "json", "SELECT * FROM devices"}, ids: all},
		{name: "where", args: []string{"--page-size", "2", "SELECT * FROM devices WHERE tags.site = 'berlin'"}, ids: []any{"q0", "q2", "q4"}},
		{name: "no match", args: []string{"SELECT * FROM devices WHERE tags.site = 'rome'"}, docs: nil},
		{name: "projection", args: []string{"--page-size", "3", "SELECT deviceId, tags.site AS site FROM devices WHERE tags.n >= 3"},
			docs: []map[string]any{{"deviceId": "q3", "site": "paris"}, {"deviceId": "q4", "site": "berlin"}}},
		{name: "group by", args: []string{"SELECT tags.site, COUNT() AS n FROM devices GROUP BY tags.site"},
			docs: []map[string]any{{"site": "berlin", "n": float64(3)}, {"site": "paris", "n": float64(2)}}},
		{name: "query's TOP", args: []string{"--page-size", "1", "SELECT TOP 2 * FROM devices"}, ids: []any{"q0", "q1"}},
		{name: "--top within a page", args: []string{"--top", "2", "SELECT * FROM devices"}, ids: []any{"q0", "q1"}},
		{name: "--top across pages", args: []string{"--top", "3", "--page-size", "2", "SELECT * FROM devices"}, ids: []any{"q0", "q1", "q2"}},
		{name: "--top over the count", args: []string{"--top", "9", "--page-size", "2", "SELECT * FROM devices"}, ids: all},
		{name: "connection string from the environment", env: svcCS, noBaseArgs: true,
			args: []string{"--ca-file", caFile, "SELECT deviceId FROM devices WHERE deviceId = 'q1'"}, docs: []map[string]any{{"deviceId": "q1"}}},

		{name: "refused query", args: []string{"SELEKT * FROM devices"}, code: exitUsage,
			stderrHas: []string{"iothub: 400004 ArgumentInvalid: ", "iothub: tracking ID "}},
		{name: "unknown collection", args: []string{"SELECT * FROM things"}, code: exitUsage, stderrHas: []string{"iothub: 400004 ArgumentInvalid: "}},
		{name: "token of another query", args: []string{"--continuation", "AAAAAAAAAAEAAAAAAAAAAA", "SELECT * FROM devices"}, code: exitUsage,
			stderrHas: []string{"iothub: 400004 ArgumentInvalid: "}},
		{name: "wrong key", noBaseArgs: true, code: exitFailure,
			args:      []string{"--connection-string", strings.Replace(svcCS, svc.SharedAccessKey, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", 1), "--ca-file", caFile, "SELECT * FROM devices"},
			stderrHas: []string{"iothub: 401002 IotHubUnauthorizedAccess: "}},
		{name: "untrusted hub", noBaseArgs: true, code: exitFailure, args: []string{"--connection-string", svcCS, "SELECT * FROM devices"},
			stderrHas: []string{"iothub: ", "certificate"}},
		{name: "no query", code: exitUsage, stderrHas: []string{"the query is required"}},
		{name: "empty query", args: []string{""}, code: exitUsage, stderrHas: []string{"iothub: ", "empty"}},
		{name: "two arguments", args: []string{"SELECT", "* FROM devices"}, code: exitUsage, stderrHas: []string{`unexpected argument "* FROM devices"`}},
		{name: "flag after the query", args: []string{"SELECT * FROM devices", "--page-size", "2"}, code: exitUsage, stderrHas: []string{"flags go before it"}},
		{name: "page size too big", args: []string{"--page-size", "1001", "SELECT * FROM devices"}, code: exitUsage, stderrHas: []string{"--page-size 1001 is out of range"}},
		{name: "negative page size", args: []string{"--page-size", "-1", "SELECT * FROM devices"}, code: exitUsage, stderrHas: []string{"--page-size -1 is out of range"}},
		{name: "negative top", args: []string{"--top", "-1", "SELECT * FROM devices"}, code: exitUsage, stderrHas: []string{"--top -1 is negative"}},
		{name: "missing connection string", noBaseArgs: true, args: []string{"SELECT * FROM devices"}, code: exitUsage,
			stderrHas: []string{"IOTHUB_SERVICE_CONNECTION_STRING is required"}},
		{name: "bad connection string", noBaseArgs: true, args: []string{"--connection-string", "SharedAccessKey=" + svc.SharedAccessKey, "SELECT * FROM devices"},
			code: exitUsage, stderrHas: []string{"iothub: invalid connection string"}},
		{name: "missing CA file", args: []string{"--ca-file", filepath.Join(t.TempDir(), "nope.pem"), "SELECT * FROM devices"}, code: exitUsage, stderrHas: []string{"--ca-file"}},
		{name: "bad output", args: []string{"--output", "yaml", "SELECT * FROM devices"}, code: exitUsage, stderrHas: []string{"want text or json"}},
		{name: "help", noBaseArgs: true, args: []string{"-h"}, code: exitOK, stderrHas: []string{"usage: iothub query", "-page-size", "-continuation token",
			"-top N", "-output format", "--output json", `{"error":{"code":400004`,
			"exit status:\n  0  success\n  1  failure: the hub, the network or the run failed\n  2  bad usage: ", "refuses the query"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("IOTHUB_SERVICE_CONNECTION_STRING", tc.env)
			args := tc.args
			if !tc.noBaseArgs {
				args = append(append([]string(nil), base...), args...)
			}
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"query"}, args...), &stdout, &stderr)
			require.Equal(t, tc.code, code, "exit status; stderr %q", stderr.String())
			for _, want := range tc.stderrHas {
				assert.Contains(t, stderr.String(), want, "stderr")
			}
			assert.NotContains(t, stdout.String()+stderr.String(), svc.SharedAccessKey, "the output shows a key")
			if tc.code != exitOK {
				assert.Empty(t, stdout.String(), "stdout on failure (--output text)")
				return
			}
			if tc.stderrHas != nil { // help
				assert.Empty(t, stdout.String(), "stdout of -h")
				return
			}
			assert.Empty(t, stderr.String(), "stderr on success")
			docs := queryLines(t, stdout.String())
			switch {
			case tc.ids != nil:
				assert.Equal(t, tc.ids, deviceIDs(docs), "devices, in order")
				for _, d := range docs {
					assert.Contains(t, d, "etag", "a whole twin")
					assert.Contains(t, d, "properties", "a whole twin")
				}
			default:
				assert.Equal(t, tc.docs, docs, "items")
			}
		})
	}
	_ = hub
}

// --continuation resumes a query with a token the hub gave out (here, to
// the service client), and pages on from there.
func TestQueryCommandContinuation(t *testing.T) {
	_, caFile, svcCS := queryHub(t)
	const sql = "SELECT * FROM devices"
	c, closeIdle, err := newServiceClient(svcCS, caFile)
	require.NoError(t, err)
	t.Cleanup(closeIdle)
	first, err := c.NewQueryPager(sql, &service.QueryOptions{PageSize: 2}).NextPage(context.Background())
	require.NoError(t, err)
	require.Len(t, first.Items, 2)
	require.NotEmpty(t, first.ContinuationToken)

	var stdout, stderr bytes.Buffer
	code := run([]string{"query", "--connection-string", svcCS, "--ca-file", caFile, "--page-size", "2",
		"--continuation", first.ContinuationToken, sql}, &stdout, &stderr)
	require.Equal(t, exitOK, code, "exit status; stderr %q", stderr.String())
	assert.Equal(t, []any{"q2", "q3", "q4"}, deviceIDs(queryLines(t, stdout.String())))

	// The token is bound to its query.
	stdout.Reset()
	stderr.Reset()
	code = run([]string{"query", "--connection-string", svcCS, "--ca-file", caFile,
		"--continuation", first.ContinuationToken, "SELECT deviceId FROM devices"}, &stdout, &stderr)
	assert.Equal(t, exitUsage, code, "exit status; stderr %q", stderr.String())
	assert.Contains(t, stderr.String(), "iothub: 400004 ArgumentInvalid: ")
	assert.Empty(t, stdout.String())
}

// With --output json, a failure at the hub is one JSON document on stdout
// as well as the message on stderr; a failure after some pages names the
// token that resumes the query.
func TestQueryCommandJSONErrors(t *testing.T) {
	hub, caFile, svcCS := queryHub(t)
	t.Run("refused query", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := run([]string{"query", "--connection-string", svcCS, "--ca-file", caFile, "--output", "json", "SELECT * FROM devices WHERE"}, &stdout, &stderr)
		assert.Equal(t, exitUsage, code, "exit status; stderr %q", stderr.String())
		assert.Contains(t, stderr.String(), "iothub: 400004 ArgumentInvalid: ")
		require.Equal(t, 1, strings.Count(stdout.String(), "\n"), "one line on stdout: %q", stdout.String())
		var doc struct {
			Error invokeError `json:"error"`
		}
		dec := json.NewDecoder(&stdout)
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&doc))
		assert.Equal(t, 400004, doc.Error.Code)
		assert.Equal(t, "ArgumentInvalid", doc.Error.ErrorCode)
		assert.True(t, strings.HasPrefix(doc.Error.Message, "iothub: "), "message %q", doc.Error.Message)
		assert.NotEmpty(t, doc.Error.TrackingID)
	})
	t.Run("hub fails", func(t *testing.T) {
		require.NoError(t, hub.FailServiceRequests(403002, 1)) // IotHubQuotaExceeded: not retried
		var stdout, stderr bytes.Buffer
		code := run([]string{"query", "--connection-string", svcCS, "--ca-file", caFile, "--output", "json", "SELECT * FROM devices"}, &stdout, &stderr)
		assert.Equal(t, exitFailure, code, "exit status; stderr %q", stderr.String())
		var doc struct {
			Error invokeError `json:"error"`
		}
		require.NoError(t, json.Unmarshal(stdout.Bytes(), &doc), "stdout %q", stdout.String())
		assert.Equal(t, 403002, doc.Error.Code)
	})
}
