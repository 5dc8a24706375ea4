package main

import (
	"bytes"
	"encoding/json"
	"io"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub"
)

// "iothub help" lists every command with an example; no arguments print
// the same text as an error.
func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, run([]string{"help"}, &stdout, &stderr), "help: exit status")
	help := stdout.String()
	for _, cmd := range []string{"hub", "device", "invoke", "bench"} {
		assert.Contains(t, help, "\n  "+cmd+" ", "help does not list %q", cmd)
		assert.Contains(t, help, "\n  iothub "+cmd, "help has no example of %q", cmd)
	}
	assert.Contains(t, help, "\n  version print the SDK and Go versions (also: iothub --version)", "help lacks the version line")
	assert.Contains(t, help, "measure latency, throughput and scale (see BENCHMARKS.md)", "help lacks the bench line")
	assert.Contains(t, help, "--output json", "help lacks --output")
	for _, want := range []string{"exit status:\n  0  success", "\n  1  failure", "\n  2  bad usage",
		"\n  3  invoke only: the device answered with a status outside 200-299", "\n  4  invoke only: the device was not online"} {
		assert.Contains(t, help, want, "help lacks the exit statuses")
	}
	assert.Equal(t, exitUsage, run(nil, io.Discard, &stderr), "no arguments: exit status")
	assert.Contains(t, stderr.String(), "usage: iothub", "no arguments: stderr")
}

// Every command's -h documents --output and the exit statuses, and the
// codes it documents are the ones it uses.
func TestHelpDocumentsExitStatus(t *testing.T) {
	assert.Equal(t, 0, exitOK)
	assert.Equal(t, 1, exitFailure)
	assert.Equal(t, 2, exitUsage)
	assert.Equal(t, 3, exitDeviceStatus)
	assert.Equal(t, 4, exitDeviceUnreachable)
	for _, cmd := range []string{"hub", "device", "invoke", "bench", "version"} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, exitOK, run([]string{cmd, "-h"}, &stdout, &stderr), "%s -h: exit status", cmd)
		assert.Empty(t, stdout.String(), "%s -h: stdout", cmd)
		for _, want := range []string{"usage: iothub " + cmd, "--output json", "-output format",
			"exit status:\n  0  success\n  1  failure: the hub, the network or the run failed\n  2  bad usage: "} {
			assert.Contains(t, stderr.String(), want, "%s -h", cmd)
		}
		assert.Equal(t, exitUsage, run([]string{cmd, "--output", "xml"}, io.Discard, io.Discard), "%s --output xml: exit status", cmd)
		assert.Equal(t, exitUsage, run([]string{cmd, "--no-such-flag"}, io.Discard, io.Discard), "%s --no-such-flag: exit status", cmd)
	}
}

func TestVersion(t *testing.T) {
	want := "iothub " + iothub.Version + " (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}, {"version", "--output", "text"}} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, exitOK, run(args, &stdout, &stderr), "%q: exit status", args)
		assert.Equal(t, want, stdout.String(), "%q: stdout", args)
		assert.Empty(t, stderr.String(), "%q: stderr", args)
	}

	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, run([]string{"version", "--output", "json"}, &stdout, &stderr), "version --output json: stderr %q", stderr.String())
	var v versionInfo
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&v), "version --output json")
	assert.Equal(t, versionInfo{Version: iothub.Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}, v)
	assert.False(t, dec.More(), "one document")

	for _, args := range [][]string{{"--version", "extra"}, {"version", "extra"}, {"version", "--output", "yaml"}} {
		stderr.Reset()
		assert.Equal(t, exitUsage, run(args, io.Discard, &stderr), "%q: exit status", args)
		assert.NotEmpty(t, stderr.String(), "%q: stderr", args)
	}
}
