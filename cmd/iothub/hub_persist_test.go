package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// buildIothub builds the iothub command into a temporary directory.
func buildIothub(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "iothub")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// hubProc is `iothub hub --output json` running as a child process.
type hubProc struct {
	cmd    *exec.Cmd
	info   hubInfo
	stderr *syncbuf.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit, once done is closed
}

// persistentHub is the command line of a hub on fixed random ports (so
// that connection strings stay valid across restarts) with --data dir.
type persistentHub struct {
	bin, dir, caFile string
	ports            []string // mqtt, amqp, https
}

func newPersistentHub(t *testing.T) *persistentHub {
	t.Helper()
	d := t.TempDir()
	return &persistentHub{bin: buildIothub(t), dir: filepath.Join(d, "data"), caFile: filepath.Join(d, "ca.pem"),
		ports: []string{freePort(t), freePort(t), freePort(t)}}
}

// start runs the hub and waits for its first line; the process is killed
// at the end of the test if it still runs.
func (p *persistentHub) start(t *testing.T, extra ...string) *hubProc {
	t.Helper()
	args := append([]string{"hub", "--data", p.dir, "--mqtt-addr", p.ports[0], "--amqp-addr", p.ports[1],
		"--https-addr", p.ports[2], "--ca-file", p.caFile, "--output", "json", "--quiet"}, extra...)
	h := &hubProc{cmd: exec.Command(p.bin, args...), stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	h.cmd.Stderr = h.stderr
	out, err := h.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, h.cmd.Start())
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		line := ""
		if sc.Scan() {
			line = sc.Text()
		}
		first <- line
		for sc.Scan() {
		}
		h.err = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		_ = h.cmd.Process.Kill()
		<-h.done
	})
	select {
	case line := <-first:
		require.NoError(t, json.Unmarshal([]byte(line), &h.info), "first line %q; stderr:\n%s", line, h.stderr.String())
	case <-time.After(60 * time.Second):
		require.FailNow(t, "the hub printed nothing", "stderr:\n%s", h.stderr.String())
	}
	return h
}

// kill SIGKILLs the hub and waits for it.
func (h *hubProc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, h.cmd.Process.Kill())
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		require.FailNow(t, "the killed hub did not exit")
	}
}

// stop SIGTERMs the hub and checks that it exits with status 0.
func (h *hubProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, h.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-h.done:
		require.NoError(t, h.err, "stderr:\n%s", h.stderr.String())
	case <-time.After(30 * time.Second):
		require.FailNow(t, "the hub did not stop on SIGTERM")
	}
}

// tlsConfig trusts the CA certificate in caPEM.
func tlsConfig(t *testing.T, caPEM []byte) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// serviceClient is a service client without retries, so that a call to a
// dead hub fails at once.
func serviceClient(t *testing.T, svcCS string, conf *tls.Config) *service.Client {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}, Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	opts := &service.ClientOptions{}
	opts.Transport = hc
	opts.Retry.MaxRetries = -1
	c, err := service.NewClientFromConnectionString(svcCS, opts)
	require.NoError(t, err)
	return c
}

// ackedTwin is a twin update the hub acknowledged.
type ackedTwin struct {
	n       int   // the desired property "n" it set
	version int64 // the twin version it answered
}

// TestPersistCrash: SIGKILL the hub during a burst of concurrent registry
// creates and twin updates, twice, and check after each restart on the
// same --data that every acknowledged device and twin update is there,
// with the same owner key and CA.
func TestPersistCrash(t *testing.T) {
	p := newPersistentHub(t)
	h := p.start(t)
	svcCS := h.info.ServiceConnectionString
	caPEM, err := os.ReadFile(p.caFile)
	require.NoError(t, err)
	conf := tlsConfig(t, caPEM)

	var mu sync.Mutex
	devices := map[string]bool{}      // acknowledged creates
	twins := map[string]ackedTwin{}   // the newest acknowledged update per device
	const workers, killAfter = 8, 120 // acknowledged writes per round before the kill
	for round := range 2 {
		svc := serviceClient(t, svcCS, conf)
		var writes atomic.Int64
		reached := make(chan struct{})
		ack := func() {
			if writes.Add(1) == killAfter {
				close(reached)
			}
		}
		stopped := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := context.Background()
				for i := 0; ; i++ {
					select {
					case <-stopped:
						return
					default:
					}
					id := fmt.Sprintf("r%d-w%d-d%d", round, w, i)
					if _, err := svc.CreateDevice(ctx, &service.Device{DeviceID: id}); err != nil {
						return
					}
					mu.Lock()
					devices[id] = true
					mu.Unlock()
					ack()
					for n := 1; n <= 3; n++ {
						tw, err := svc.UpdateTwin(ctx, id, &service.TwinPatch{Tags: map[string]any{"w": w},
							Desired: map[string]any{"n": n, "pad": fmt.Sprintf("%0200d", n)}}, nil)
						if err != nil {
							return
						}
						mu.Lock()
						twins[id] = ackedTwin{n: n, version: tw.Version}
						mu.Unlock()
						ack()
					}
				}
			}()
		}
		select {
		case <-reached:
		case <-time.After(2 * time.Minute):
			require.FailNow(t, "the burst made too few writes", "stderr:\n%s", h.stderr.String())
		}
		h.kill(t) // mid-burst: the workers are still writing
		close(stopped)
		wg.Wait()

		h = p.start(t)
		assert.Equal(t, svcCS, h.info.ServiceConnectionString, "the owner key changed across the restart")
		again, err := os.ReadFile(p.caFile)
		require.NoError(t, err)
		assert.Equal(t, string(caPEM), string(again), "the CA changed across the restart")
		svc = serviceClient(t, svcCS, conf)
		ctx := context.Background()
		mu.Lock()
		for id := range devices {
			_, err := svc.GetDevice(ctx, id)
			require.NoError(t, err, "acknowledged device %s lost", id)
		}
		for id, want := range twins {
			tw, err := svc.GetTwin(ctx, id)
			require.NoError(t, err, "twin %s", id)
			var n int
			require.NoError(t, json.Unmarshal(tw.Desired.Properties["n"], &n), "twin %s", id)
			assert.GreaterOrEqual(t, n, want.n, "twin %s: acknowledged n=%d", id, want.n)
			assert.GreaterOrEqual(t, tw.Version, want.version, "twin %s: acknowledged version %d", id, want.version)
			assert.NotEmpty(t, tw.Tags["w"], "twin %s: tags lost", id)
		}
		t.Logf("round %d: %d devices and %d twins acknowledged, all there after SIGKILL", round, len(devices), len(twins))
		mu.Unlock()
		// The restarted hub takes writes.
		_, err = svc.CreateDevice(ctx, &service.Device{DeviceID: fmt.Sprintf("after-%d", round)})
		require.NoError(t, err)
	}
	h.stop(t)
}

// TestPersistRestartDevices: across a restart on the same --data, a SAS
// device keeps its connection string (also as printed by --device), a
// CA-signed device is still trusted without --device-ca, and the devices
// connect again with the CA file of the first run; modules and twins are
// there.
func TestPersistRestartDevices(t *testing.T) {
	p := newPersistentHub(t)
	ca, deviceCAFile := writeCA(t, "fleet CA")
	cert, err := ca.IssueClient("dev-ca", time.Hour)
	require.NoError(t, err)

	h := p.start(t, "--device", "dev1", "--device-ca", deviceCAFile)
	require.Len(t, h.info.Devices, 1)
	devCS := h.info.Devices[0].ConnectionString
	svcCS := h.info.ServiceConnectionString
	caPEM, err := os.ReadFile(p.caFile)
	require.NoError(t, err)
	conf := tlsConfig(t, caPEM)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	svc := serviceClient(t, svcCS, conf)
	_, err = svc.CreateDevice(ctx, &service.Device{DeviceID: "dev-ca", Authentication: service.Authentication{Type: service.AuthenticationTypeCertificateAuthority}})
	require.NoError(t, err)
	_, err = svc.CreateModule(ctx, &service.Module{DeviceID: "dev1", ModuleID: "mod1"})
	require.NoError(t, err)
	_, err = svc.UpdateTwin(ctx, "dev1", &service.TwinPatch{Tags: map[string]any{"site": "lab"}, Desired: map[string]any{"interval": 30}}, nil)
	require.NoError(t, err)

	connect := func(t *testing.T, devCS string, conf *tls.Config) {
		t.Helper()
		d, err := device.NewClientFromConnectionString(devCS, &device.ClientOptions{Transport: mqtt.New(nil), TLSConfig: conf})
		require.NoError(t, err)
		require.NoError(t, d.Connect(ctx))
		_, err = d.UpdateReportedProperties(ctx, map[string]any{"fw": "1.0"})
		require.NoError(t, err)
		require.NoError(t, d.Close(ctx))
	}
	connectCA := func(t *testing.T, conf *tls.Config) {
		t.Helper()
		c := conf.Clone()
		c.Certificates = []tls.Certificate{cert}
		pc, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + p.ports[0], TLS: c,
			Identity: auth.Identity{HostName: "localhost", DeviceID: "dev-ca"}})
		require.NoError(t, err)
		pc.Disconnect(50)
	}
	connect(t, devCS, conf)
	connectCA(t, conf)
	before, err := svc.GetTwin(ctx, "dev1")
	require.NoError(t, err)
	h.stop(t)

	// Restart with --device dev1 (kept, not created again) and without
	// --device-ca (kept in --data).
	h = p.start(t, "--device", "dev1")
	require.Len(t, h.info.Devices, 1)
	assert.Equal(t, devCS, h.info.Devices[0].ConnectionString)
	assert.Equal(t, svcCS, h.info.ServiceConnectionString)
	connect(t, devCS, conf) // the first run's CA file and connection string
	connectCA(t, conf)

	svc = serviceClient(t, svcCS, conf)
	after, err := svc.GetTwin(ctx, "dev1")
	require.NoError(t, err)
	assert.Equal(t, before.Tags, after.Tags)
	assert.Equal(t, before.Desired, after.Desired)
	assert.Equal(t, before.ETag, after.ETag)
	assert.Greater(t, after.Reported.Version, before.Reported.Version, "the second run's report")
	_, err = svc.GetModule(ctx, "dev1", "mod1")
	require.NoError(t, err)
	h.stop(t)
}

// TestPersistDataInUse: a second hub on the same --data fails at once,
// saying why.
func TestPersistDataInUse(t *testing.T) {
	p := newPersistentHub(t)
	h := p.start(t)
	q := *p
	q.ports = []string{freePort(t), freePort(t), freePort(t)}
	args := []string{"hub", "--data", p.dir, "--mqtt-addr", q.ports[0], "--amqp-addr", q.ports[1], "--https-addr", q.ports[2], "--quiet"}
	out, err := exec.Command(p.bin, args...).CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "in use by another hub")
	h.stop(t)
}
