package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport"
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
	for _, tr := range []string{"mqtt", "mqtt-ws"} {
		t.Run(tr, func(t *testing.T) {
			var out exampletest.Buffer
			if err := run(exampletest.Context(t), config{Transport: tr}, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			exampletest.WantInOrder(t, out.String(),
				"hub:     started in-process",
				"service: registered device quickstart-device",
				"device:  quickstart-device connected over "+tr,
				`service: invoking "reboot" on quickstart-device`,
				`device:  quickstart-device received "reboot"`,
				`service: quickstart-device answered 200 {"result":"Reboot started."}`,
			)
		})
	}
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
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	exampletest.WantInOrder(t, out.String(),
		"hub:     localhost",
		"device:  dev-1 connected over mqtt",
		`service: dev-1 answered 200 {"result":"Reboot started."}`,
	)
	if strings.Contains(out.String(), "SharedAccessKey") {
		t.Errorf("output shows a connection string:\n%s", out.String())
	}
	if calls := hub.Calls(); len(calls) != 1 || calls[0].DeviceID != "dev-1" || calls[0].Status != 200 {
		t.Errorf("hub saw %+v, want one reboot of dev-1 answered 200", calls)
	}
}

// A module connection string works too: the module answers.
func TestExistingHubModule(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "gw-1")
	modCS := hub.AddModule(t, "gw-1", "agent")
	ca := exampletest.CAFile(t, hub)
	var out exampletest.Buffer
	err := run(exampletest.Context(t), config{ServiceConnectionString: hub.ServiceConnectionString(), DeviceConnectionString: modCS, CAFile: ca}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	exampletest.WantInOrder(t, out.String(), `service: gw-1/agent answered 200`)
}

func TestErrors(t *testing.T) {
	ctx := exampletest.Context(t)
	var out exampletest.Buffer
	if err := run(ctx, config{Transport: "http"}, &out); !errors.Is(err, transport.ErrUnsupported) {
		t.Errorf("--transport http: got %v, want transport.ErrUnsupported", err)
	}
	if err := run(ctx, config{Transport: "carrier-pigeon"}, &out); err == nil || !strings.Contains(err.Error(), "want mqtt") {
		t.Errorf("--transport carrier-pigeon: got %v", err)
	}
	if err := run(ctx, config{ServiceConnectionString: "HostName=h;SharedAccessKeyName=s;SharedAccessKey=aGVsbG8="}, &out); err == nil || !strings.Contains(err.Error(), "set both") {
		t.Errorf("one connection string: got %v", err)
	}
	if err := run(ctx, config{ServiceConnectionString: "x", DeviceConnectionString: "y", CAFile: filepath.Join(t.TempDir(), "missing.pem")}, &out); err == nil {
		t.Error("missing --ca-file: no error")
	}
}

// The program itself, as `go run ./examples/quickstart` runs it: no
// configuration, exit status 0.
func TestProgram(t *testing.T) {
	for _, args := range []string{"", "--transport mqtt-ws"} {
		cmd := exec.CommandContext(exampletest.Context(t), os.Args[0], "-test.run=^$")
		cmd.Env = append(withoutHubEnv(os.Environ()), "QUICKSTART_AS_MAIN=1", "QUICKSTART_ARGS="+args)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("quickstart %s: %v\n%s", args, err, out)
		}
		exampletest.WantInOrder(t, string(out), "started in-process", `answered 200 {"result":"Reboot started."}`)
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
