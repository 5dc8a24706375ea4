package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/internal/testutil/syncbuf"

	"github.com/iothub-go/iothub/internal/testutil/hubcall"
	"github.com/iothub-go/iothub/iothubtest"
)

func TestDeviceCommand(t *testing.T) {
	for _, tr := range []string{"mqtt", "mqtt-ws", "amqp", "amqp-ws"} {
		t.Run(tr, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			caFile := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(caFile, hub.CACertPEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := parseDeviceFlags([]string{"--connection-string", hub.AddDevice(t, "sim1"), "--transport", tr, "--ca-file", caFile}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			outR, outW := io.Pipe()
			var logs syncbuf.Buffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- serveDevice(ctx, cfg, outW, &logs)
				outW.Close()
			}()
			sc := bufio.NewScanner(outR)
			for sc.Scan() && sc.Text() != "connected" {
			}
			go io.Copy(io.Discard, outR)

			st, body := hubcall.Invoke(t, hub, "sim1", `{"methodName":"reboot","payload":{"delay":5}}`)
			if st != 200 || body != `{"status":200,"payload":{"method":"reboot","payload":{"delay":5}}}` {
				t.Fatalf("invoke: %d %s", st, body)
			}
			st, body = hubcall.Invoke(t, hub, "sim1", `{"methodName":"ping"}`)
			if st != 200 || body != `{"status":200,"payload":{"method":"ping","payload":null}}` {
				t.Fatalf("invoke without payload: %d %s", st, body)
			}
			cancel() // as SIGINT does
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the device did not stop")
			}
			if log := logs.String(); !strings.Contains(log, "msg=method identity=sim1") || !strings.Contains(log, "method=reboot status=200 duration=") {
				t.Fatalf("log lacks the method calls:\n%s", log)
			}
		})
	}
}

func TestDeviceFlags(t *testing.T) {
	t.Setenv("IOTHUB_DEVICE_CONNECTION_STRING", "")
	for _, args := range [][]string{
		{},
		{"--connection-string", "x", "--transport", "carrier-pigeon"},
		{"--connection-string", "x", "--cert-file", "c.pem"},
	} {
		if _, err := parseDeviceFlags(args, io.Discard); err == nil {
			t.Errorf("parseDeviceFlags(%q) accepted", args)
		}
	}
	if code := run([]string{"device", "--connection-string", "HostName=h;DeviceId=d;SharedAccessKey=bad!"}, io.Discard, io.Discard); code != 1 {
		t.Errorf("bad connection string exit %d, want 1", code)
	}
}
