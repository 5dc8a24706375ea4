//go:build conformance

package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/service"
)

// c2dPeer is a running c2d_device.js: the official Node device SDK
// receiving cloud-to-device messages.
type c2dPeer struct {
	events chan map[string]any
	mu     sync.Mutex
	log    strings.Builder
}

func (p *c2dPeer) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// startC2DPeer runs c2d_device.js and waits until its subscription is in
// place.
func startC2DPeer(t *testing.T, h *hubProc, deviceID, transport, mode string) *c2dPeer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", "c2d_device.js")
	cmd.Env = append(os.Environ(), "DEVICE_CS="+h.deviceCS[deviceID], "TRANSPORT="+transport, "CA_FILE="+h.caFile, "MODE="+mode)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	p := &c2dPeer{events: make(chan map[string]any, 256)}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = &lockedWriter{w: writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.log.Write(b)
	})}
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.events <- m:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("c2d_device.js (%s, %s) output:\n%s", transport, mode, p.output())
		}
	})
	p.next(t, "ready", "")
	return p
}

// next returns the next event of kind (and message id, if not ""),
// skipping others; it fails after 30 s.
func (p *c2dPeer) next(t *testing.T, kind, messageID string) map[string]any {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-p.events:
			if ev["event"] == "error" {
				require.FailNow(t, "c2d_device.js failed", "%v; output:\n%s", ev, p.output())
			}
			if ev["event"] == kind && (messageID == "" || ev["messageId"] == messageID) {
				return ev
			}
		case <-timeout:
			require.FailNow(t, "no "+kind+" event from c2d_device.js", "message %q; output:\n%s", messageID, p.output())
		}
	}
}

// feedbackFor reads feedback batches until the record of messageID.
func feedbackFor(t *testing.T, ctx context.Context, rcv *service.FeedbackReceiver, messageID string) service.FeedbackRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	for {
		batch, err := rcv.Receive(ctx)
		require.NoError(t, err, "no feedback for %s", messageID)
		require.NoError(t, batch.Complete(ctx))
		for _, r := range batch.Records {
			if r.OriginalMessageID == messageID {
				return r
			}
		}
	}
}

// TestC2DNodeDevice: this SDK's service client sends to the official Node
// device SDK over every transport; the device completes, rejects or
// abandons, and the feedback says so.
func TestC2DNodeDevice(t *testing.T) {
	h := startHub(t, "c2d-mqtt", "c2d-mqttws", "c2d-amqp", "c2d-amqpws", "c2d-http", "c2d-rej-amqp", "c2d-rej-http", "c2d-ab-amqp", "c2d-mqtt-rej")
	c := serviceClient(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	defer c.Close(context.Background())
	rcv, err := c.NewFeedbackReceiver(ctx)
	require.NoError(t, err)
	defer rcv.Close(context.Background())
	send := func(deviceID, id string) {
		t.Helper()
		require.NoError(t, c.Send(ctx, deviceID, &service.C2DMessage{
			MessageID: id, CorrelationID: "corr-" + id, Body: []byte(`{"fw":"2.0"}`),
			Properties: map[string]string{"kind": "firmware", "site": "b-12"}, Ack: service.AckFull,
		}), "Send %s", id)
	}

	for _, tr := range []string{"mqtt", "mqttws", "amqp", "amqpws", "http"} {
		t.Run("complete/"+tr, func(t *testing.T) {
			id := "c2d-" + tr
			send(id, "queued-"+tr) // queued while the device is offline
			p := startC2DPeer(t, h, id, tr, "complete")
			ev := p.next(t, "message", "queued-"+tr)
			assert.Equal(t, `{"fw":"2.0"}`, ev["data"])
			assert.Equal(t, "corr-queued-"+tr, ev["correlationId"])
			props, _ := ev["properties"].(map[string]any)
			prefix := ""
			if tr == "http" {
				prefix = "iothub-app-" // Node's HTTP transport keeps the header prefix in the name
			}
			assert.Equal(t, "firmware", props[prefix+"kind"], "properties: %v", props)
			assert.Equal(t, "b-12", props[prefix+"site"], "properties: %v", props)
			p.next(t, "settled", "queued-"+tr)
			assert.Equal(t, service.FeedbackSuccess, feedbackFor(t, ctx, rcv, "queued-"+tr).Status)

			send(id, "live-"+tr) // and while it is online
			p.next(t, "settled", "live-"+tr)
			r := feedbackFor(t, ctx, rcv, "live-"+tr)
			assert.Equal(t, service.FeedbackSuccess, r.Status)
			assert.Equal(t, id, r.DeviceID)
		})
	}
	for _, tr := range []string{"amqp", "http"} {
		t.Run("reject/"+tr, func(t *testing.T) {
			id := "c2d-rej-" + tr
			p := startC2DPeer(t, h, id, tr, "reject")
			send(id, "rej-"+tr)
			p.next(t, "settled", "rej-"+tr)
			assert.Equal(t, service.FeedbackRejected, feedbackFor(t, ctx, rcv, "rej-"+tr).Status)
		})
	}
	t.Run("abandon/amqp", func(t *testing.T) {
		// Abandoned ten times (the hub's maximum delivery count), the
		// message is dead-lettered.
		p := startC2DPeer(t, h, "c2d-ab-amqp", "amqp", "abandon")
		send("c2d-ab-amqp", "ab-1")
		for i := range 10 {
			p.next(t, "settled", "ab-1")
			_ = i
		}
		assert.Equal(t, service.FeedbackDeliveryCountExceeded, feedbackFor(t, ctx, rcv, "ab-1").Status)
	})
	t.Run("reject/mqtt", func(t *testing.T) {
		// MQTT cannot reject: the SDK throws. It acknowledged the message
		// (PUBACK) on receipt already, so the hub completed it.
		p := startC2DPeer(t, h, "c2d-mqtt-rej", "mqtt", "reject")
		send("c2d-mqtt-rej", "mrej-1")
		ev := p.next(t, "settle-error", "mrej-1")
		assert.Contains(t, fmt.Sprint(ev["error"]), "NotImplementedError")
		assert.Equal(t, service.FeedbackSuccess, feedbackFor(t, ctx, rcv, "mrej-1").Status, "the SDK's PUBACK completed it")
		res, err := c.PurgeMessageQueue(ctx, "c2d-mqtt-rej")
		require.NoError(t, err)
		assert.Zero(t, res.TotalMessagesPurged, "nothing left in the queue")
	})
}

// TestC2DNodeService: the official Node service SDK sends to a device of
// this SDK and reads the Success feedback.
func TestC2DNodeService(t *testing.T) {
	h := startHub(t, "c2d-go")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got := make(chan *device.CloudMessage, 4)
	dc, err := device.NewClientFromConnectionString(h.deviceCS["c2d-go"], &device.ClientOptions{TLSConfig: hubTLS(t, h)})
	require.NoError(t, err)
	require.NoError(t, dc.SetMessageHandler(func(_ context.Context, m *device.CloudMessage) device.Disposition {
		got <- m
		return device.Complete
	}))
	require.NoError(t, dc.Connect(ctx))
	defer func() { assert.NoError(t, dc.Close(context.Background())) }()

	res, code := nodeJSON(t, "c2d_service.js", "SERVICE_CS="+h.serviceCS, "DEVICE_ID=c2d-go", "MESSAGE_ID=node-1", "CA_FILE="+h.caFile)
	require.Equal(t, 0, code, "c2d_service.js: %s", mustJSON(res))
	select {
	case m := <-got:
		assert.Equal(t, "node-1", m.MessageID)
		assert.Equal(t, "corr-node-1", m.CorrelationID)
		assert.Equal(t, `{"command":"firmwareUpdate","from":"node"}`, string(m.Body))
		assert.Equal(t, "firmware", m.Properties["kind"])
		assert.Equal(t, "full", m.Ack)
	case <-ctx.Done():
		require.FailNow(t, "the Go device received nothing")
	}
	fb, _ := res["feedback"].(map[string]any)
	require.NotNil(t, fb, "Node read no feedback record: %s", mustJSON(res))
	assert.Equal(t, "Success", fb["statusCode"], "%s", mustJSON(fb))
	assert.Equal(t, "c2d-go", fb["deviceId"])

	// A device that does not exist: Node's send fails with the hub's error.
	res, code = nodeJSON(t, "c2d_service.js", "SERVICE_CS="+h.serviceCS, "DEVICE_ID=nobody", "MESSAGE_ID=node-2", "WAIT_MS=0", "CA_FILE="+h.caFile)
	assert.Equal(t, 1, code, "%s", mustJSON(res))
	assert.Contains(t, mustJSON(res), "DeviceNotFound", "the error Node reports")
}
