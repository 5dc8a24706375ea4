package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain lets TestProgram run this test binary as the quickstart program.
func TestMain(m *testing.M) {
	if os.Getenv("QUICKSTART_AS_MAIN") == "1" {
		os.Args = append([]string{"quickstart"}, strings.Fields(os.Getenv("QUICKSTART_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestInProcessHub(t *testing.T) {
	for _, tr := range []string{"mqtt", "mqtt-ws", "amqp", "amqp-ws"} {
		t.Run(tr, func(t *testing.T) {
			var out exampletest.Buffer
			require.NoError(t, run(exampletest.Context(t), config{Transport: tr}, &out), "run:\n%s", out.String())
			exampletest.WantInOrder(t, out.String(),
				"hub:     started in-process",
				"service: registered device quickstart-device",
				"device:  quickstart-device connected over "+tr,
				`service: invoking "reboot" on quickstart-device`,
				`device:  quickstart-device received "reboot"`,
				`service: quickstart-device answered 200 {"result":"Reboot started."}`,
				"service: twin of quickstart-device: reported iothubDM.reboot.lastReboot = ",
			)
			wantSameLastReboot(t, out.String(), "quickstart-device")
		})
	}
}

// wantSameLastReboot checks that the back-end read from the twin the
// lastReboot the device reported.
func wantSameLastReboot(t *testing.T, out, id string) {
	t.Helper()
	q := regexp.QuoteMeta(id)
	reported := regexp.MustCompile(`device:  ` + q + ` rebooted; reported iothubDM\.reboot\.lastReboot = (\S+) \(reported properties version \d+\)`).FindStringSubmatch(out)
	read := regexp.MustCompile(`service: twin of ` + q + `: reported iothubDM\.reboot\.lastReboot = (\S+)`).FindStringSubmatch(out)
	require.NotNil(t, reported, "the device's report is missing:\n%s", out)
	require.NotNil(t, read, "the back-end's twin read is missing:\n%s", out)
	assert.Equal(t, reported[1], read[1], "the back-end reads what the device reported")
}

// With both connection strings set, quickstart uses that hub and device
// (here a second local hub, trusted through --ca-file as for iothub hub).
func TestExistingHub(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	devCS := hub.AddDevice(t, "dev-1")
	ca := exampletest.CAFile(t, hub)
	var out exampletest.Buffer
	err := run(exampletest.Context(t), config{
		Transport:               "mqtt",
		ServiceConnectionString: hub.ServiceConnectionString(),
		DeviceConnectionString:  devCS,
		CAFile:                  ca,
	}, &out)
	require.NoError(t, err, "run:\n%s", out.String())
	exampletest.WantInOrder(t, out.String(),
		"hub:     localhost",
		"device:  dev-1 connected over mqtt",
		`service: dev-1 answered 200 {"result":"Reboot started."}`,
		"service: twin of dev-1: reported iothubDM.reboot.lastReboot = ",
	)
	wantSameLastReboot(t, out.String(), "dev-1")
	dm, _ := hub.Twin(t, "dev-1").Reported["iothubDM"].(map[string]any)
	reboot, _ := dm["reboot"].(map[string]any)
	last, ok := reboot["lastReboot"].(string)
	require.True(t, ok, "the hub's twin has no reported iothubDM.reboot.lastReboot: %v", dm)
	assert.Contains(t, out.String(), "service: twin of dev-1: reported iothubDM.reboot.lastReboot = "+last+"\n", "the hub's twin holds the printed lastReboot")
	assert.NotContains(t, out.String(), "SharedAccessKey", "output shows a connection string")
	calls := hub.Calls()
	if assert.Len(t, calls, 1, "hub saw %+v, want one reboot of dev-1 answered 200", calls) {
		assert.Equal(t, "dev-1", calls[0].DeviceID, "the call's device")
		assert.Equal(t, 200, calls[0].Status, "the call's status")
	}
}

// A module connection string works too: the module answers.
func TestExistingHubModule(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "gw-1")
	modCS := hub.AddModule(t, "gw-1", "agent")
	ca := exampletest.CAFile(t, hub)
	var out exampletest.Buffer
	// The module has rebooted before: the back-end waits for the new time.
	hub.UpdateReported(t, "gw-1/agent", map[string]any{"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": "2020-01-01T00:00:00.000Z"}}})
	err := run(exampletest.Context(t), config{ServiceConnectionString: hub.ServiceConnectionString(), DeviceConnectionString: modCS, CAFile: ca}, &out)
	require.NoError(t, err, "run:\n%s", out.String())
	exampletest.WantInOrder(t, out.String(), `service: gw-1/agent answered 200`, "service: twin of gw-1/agent: reported iothubDM.reboot.lastReboot = ")
	wantSameLastReboot(t, out.String(), "gw-1/agent")
	assert.NotContains(t, out.String(), "2020-01-01", "the old lastReboot is not taken for the new one")
}

func TestErrors(t *testing.T) {
	ctx := exampletest.Context(t)
	var out exampletest.Buffer
	err := run(ctx, config{Transport: "http"}, &out)
	assert.ErrorIs(t, err, device.ErrUnsupported, "--transport http")
	assert.ErrorContains(t, err, "direct methods", "--transport http says why: no methods")
	assert.ErrorContains(t, err, "twins", "--transport http says why: no twins")
	// The program's own usage errors have no sentinel: their text is what
	// the user reads.
	assert.ErrorContains(t, run(ctx, config{Transport: "carrier-pigeon"}, &out), "want mqtt", "--transport carrier-pigeon")
	assert.ErrorContains(t, run(ctx, config{ServiceConnectionString: "HostName=h;SharedAccessKeyName=s;SharedAccessKey=aGVsbG8="}, &out), "set both", "one connection string")
	assert.Error(t, run(ctx, config{ServiceConnectionString: "x", DeviceConnectionString: "y", CAFile: filepath.Join(t.TempDir(), "missing.pem")}, &out), "missing --ca-file")
}

// The program itself, as `go run ./examples/quickstart` runs it: no
// configuration, exit status 0.
func TestProgram(t *testing.T) {
	for _, args := range []string{"", "--transport mqtt-ws"} {
		cmd := exec.CommandContext(exampletest.Context(t), os.Args[0], "-test.run=^$")
		cmd.Env = append(withoutHubEnv(os.Environ()), "QUICKSTART_AS_MAIN=1", "QUICKSTART_ARGS="+args)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "quickstart %s:\n%s", args, out)
		exampletest.WantInOrder(t, string(out), "started in-process", `answered 200 {"result":"Reboot started."}`, "reported iothubDM.reboot.lastReboot = ")
	}
}

func withoutHubEnv(env []string) []string {
	var keep []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "IOTHUB_") {
			keep = append(keep, kv)
		}
	}
	return keep
}
