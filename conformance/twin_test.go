//go:build conformance

package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport/amqp"
)

// twinWait bounds each wait for the twin peer's answer or event.
const twinWait = 15 * time.Second

// twinPeer is a running twin.js: the official Node device SDK, driven one
// command at a time.
type twinPeer struct {
	transport string
	stdin     io.WriteCloser
	answers   chan map[string]any // {"op":…} lines
	desired   chan map[string]any // {"event":"desired",…} lines
	exited    chan struct{}

	mu   sync.Mutex
	log  strings.Builder
	wire []string // MQTT twin topics the hub sent, in order
}

// startTwinPeer runs twin.js for deviceID and waits until it is connected.
func startTwinPeer(t *testing.T, h *hubProc, deviceID, transport string, env ...string) *twinPeer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", "twin.js")
	cmd.Env = append(os.Environ(), "DEVICE_CS="+h.deviceCS[deviceID], "TRANSPORT="+transport, "CA_FILE="+h.caFile)
	cmd.Env = append(cmd.Env, env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	p := &twinPeer{transport: transport, answers: make(chan map[string]any, 64),
		desired: make(chan map[string]any, 1024), exited: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	p.stdin = stdin
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = &lockedWriter{w: writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.log.Write(b)
	})}
	require.NoError(t, cmd.Start())
	connected := make(chan struct{})
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) != nil {
				continue
			}
			switch {
			case m["event"] == "connected":
				once.Do(func() { close(connected) })
			case m["event"] == "desired":
				p.desired <- m
			case m["wire"] != nil:
				topic, _ := m["topic"].(string)
				body, _ := m["body"].(string)
				p.mu.Lock()
				p.wire = append(p.wire, topic+" "+body)
				p.mu.Unlock()
			case m["op"] != nil:
				p.answers <- m
			}
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
		}
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("twin.js (%s) output:\n%s", transport, p.output())
		}
	})
	select {
	case <-connected:
	case <-p.exited:
		require.FailNow(t, "twin.js ended before it connected", "%s; output:\n%s", transport, p.output())
	case <-time.After(30 * time.Second):
		require.FailNow(t, "twin.js never connected", "%s; output:\n%s", transport, p.output())
	}
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *twinPeer) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// lastWire returns the last MQTT twin message the hub sent ("topic body").
func (p *twinPeer) lastWire() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.wire) == 0 {
		return ""
	}
	return p.wire[len(p.wire)-1]
}

// do sends one command and returns its answer.
func (p *twinPeer) do(t *testing.T, cmd map[string]any) map[string]any {
	t.Helper()
	_, err := io.WriteString(p.stdin, mustJSON(cmd)+"\n")
	require.NoError(t, err, "writing to twin.js")
	select {
	case a := <-p.answers:
		require.Equal(t, cmd["op"], a["op"], "twin.js answered another command: %s", mustJSON(a))
		return a
	case <-p.exited:
		require.FailNow(t, "twin.js ended", "while running %s", mustJSON(cmd))
	case <-time.After(twinWait):
		require.FailNow(t, "twin.js did not answer", "%s over %s", mustJSON(cmd), p.transport)
	}
	return nil
}

// ok sends a command that must succeed and returns its answer.
func (p *twinPeer) ok(t *testing.T, cmd map[string]any) map[string]any {
	t.Helper()
	a := p.do(t, cmd)
	require.Nil(t, a["error"], "%s over %s: the Node SDK reported an error: %s", cmd["op"], p.transport, mustJSON(a["error"]))
	return a
}

// nextDesired returns the next desired-property event of the given source
// ("initial", "get" or "push"); events of other sources are skipped.
func (p *twinPeer) nextDesired(t *testing.T, source string) map[string]any {
	t.Helper()
	timeout := time.After(twinWait)
	for {
		select {
		case ev := <-p.desired:
			if ev["source"] == source {
				patch, _ := ev["patch"].(map[string]any)
				return patch
			}
		case <-p.exited:
			require.FailNow(t, "twin.js ended", "waiting for a %s desired event over %s", source, p.transport)
		case <-timeout:
			require.FailNow(t, "no desired-property event", "source %s over %s", source, p.transport)
		}
	}
}

// noMorePushes fails if twin.js has reported a desired push not taken yet.
func (p *twinPeer) noMorePushes(t *testing.T) {
	t.Helper()
	for {
		select {
		case ev := <-p.desired:
			require.NotEqual(t, "push", ev["source"], "an unexpected desired push: %s", mustJSON(ev))
		default:
			return
		}
	}
}

// section is a twin section as a device sees it: the properties with
// their $version, without $metadata.
func section(p service.TwinProperties) map[string]any {
	m := map[string]any{"$version": float64(p.Version)}
	for k, v := range p.Properties {
		var x any
		_ = json.Unmarshal(v, &x)
		m[k] = x
	}
	return m
}

// withVersion is patch plus "$version": v, as the hub pushes it.
func withVersion(patch map[string]any, v int64) map[string]any {
	m := map[string]any{"$version": v}
	for k, x := range patch {
		m[k] = x
	}
	return m
}

// sameJSON compares JSON values after a round trip through encoding/json,
// so that key order and number types do not matter.
func sameJSON(t *testing.T, want, got any, msgAndArgs ...any) {
	t.Helper()
	norm := func(v any) string {
		var x any
		require.NoError(t, json.Unmarshal([]byte(mustJSON(v)), &x))
		return mustJSON(x)
	}
	require.Equal(t, norm(want), norm(got), msgAndArgs...)
}

var (
	patchResponseTopic = regexp.MustCompile(`^\$iothub/twin/res/204/\?\$rid=[^&]+&\$version=(\d+) $`)
	desiredPushTopic   = regexp.MustCompile(`^\$iothub/twin/PATCH/properties/desired/\?\$version=(\d+) `)
	errorResponse      = regexp.MustCompile(`^\$iothub/twin/res/(\d+)/\?\$rid=[^ ]+ (.*)$`)
)

// TestTwinNode runs the twin flows of the official Node SDK against one
// `iothub hub`: its device client on all four transports, the model id it
// announces, and its service Registry with a Node and a Go device.
func TestTwinNode(t *testing.T) {
	h := startHub(t, "tw-mqtt", "tw-mqttws", "tw-amqp", "tw-amqpws", "tw-model-mqtt", "tw-model-amqp",
		"tw-reg-node", "tw-reg-go")
	svc := serviceClient(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for _, tr := range []string{"mqtt", "mqttws", "amqp", "amqpws"} {
		t.Run("device over "+tr, func(t *testing.T) {
			nodeTwinDevice(ctx, t, h, svc, "tw-"+tr, tr)
		})
	}

	// The Node SDK announces a model id only over MQTT (the user name's
	// model-id); over AMQP it sends none, so the twin shows none.
	const modelID = "dtmi:com:example:Thermostat;1"
	for _, tc := range []struct{ device, transport, want string }{
		{"tw-model-mqtt", "mqtt", modelID},
		{"tw-model-amqp", "amqp", ""},
	} {
		t.Run("model id over "+tc.transport, func(t *testing.T) {
			p := startTwinPeer(t, h, tc.device, tc.transport, "MODEL_ID="+modelID)
			p.ok(t, map[string]any{"op": "get"})
			tw, err := svc.GetTwin(ctx, tc.device)
			require.NoError(t, err, "GetTwin")
			require.Equal(t, tc.want, tw.ModelID, "the twin's modelId")
		})
	}

	t.Run("registry with a Node device", func(t *testing.T) {
		p := startTwinPeer(t, h, "tw-reg-node", "mqtt")
		p.ok(t, map[string]any{"op": "subscribe"})
		p.nextDesired(t, "initial")
		pushes := nodeRegistry(t, h, "tw-reg-node")
		for i, want := range pushes {
			sameJSON(t, want, p.nextDesired(t, "push"), "desired push %d", i)
		}
		p.noMorePushes(t)
	})

	t.Run("registry with a Go device", func(t *testing.T) {
		got := make(chan device.TwinProperties, 16)
		dc, err := device.NewClientFromConnectionString(h.deviceCS["tw-reg-go"],
			&device.ClientOptions{Transport: amqp.New(nil), TLSConfig: hubTLS(t, h)})
		require.NoError(t, err)
		require.NoError(t, dc.SetDesiredPropertiesHandler(func(_ context.Context, p device.TwinProperties) { got <- p }))
		require.NoError(t, dc.Connect(ctx), "Connect")
		defer func() { assert.NoError(t, dc.Close(ctx), "Close") }()
		next := func() map[string]any {
			select {
			case p := <-got:
				m := map[string]any{"$version": p.Version}
				for k, v := range p.Properties {
					m[k] = json.RawMessage(v)
				}
				return m
			case <-time.After(twinWait):
				require.FailNow(t, "the Go device got no desired properties")
				return nil
			}
		}
		next() // the whole section, once connected
		pushes := nodeRegistry(t, h, "tw-reg-go")
		for i, want := range pushes {
			sameJSON(t, want, next(), "desired patch %d", i)
		}
	})
}

// nodeTwinDevice drives a Node device's twin over transport tr and checks
// each step through the service API.
func nodeTwinDevice(ctx context.Context, t *testing.T, h *hubProc, svc *service.Client, id, tr string) {
	overMQTT := strings.HasPrefix(tr, "mqtt")
	p := startTwinPeer(t, h, id, tr)

	// Desired properties and tags set before the device reads its twin:
	// the device sees the desired ones, never the tags.
	tw, err := svc.UpdateTwin(ctx, id, &service.TwinPatch{
		Tags:    map[string]any{"building": "43"},
		Desired: map[string]any{"fw": map[string]any{"version": "1.0"}, "telemetryInterval": 5},
	}, nil)
	require.NoError(t, err, "UpdateTwin")
	got := p.ok(t, map[string]any{"op": "get"})["twin"]
	sameJSON(t, map[string]any{"desired": section(tw.Desired), "reported": section(tw.Reported)}, got,
		"the twin getTwin() returned; the service's twin: %s", mustJSON(tw))
	if overMQTT {
		assert.Regexp(t, `^\$iothub/twin/res/200/\?\$rid=\S+ \{`, p.lastWire(), "the hub's GET response")
	}

	// The seed's reboot flow: the device reports iothubDM.reboot.lastReboot
	// and the back end reads it from the twin.
	lastReboot := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	reboot := map[string]any{"reboot": map[string]any{"lastReboot": lastReboot}}
	reported := tw.Reported.Version
	for i, patch := range []map[string]any{
		{"iothubDM": reboot, "temperature": 21.5},
		{"temperature": nil, "fwVersion": "1.0.1"},
	} {
		p.ok(t, map[string]any{"op": "report", "patch": patch})
		tw, err = svc.GetTwin(ctx, id)
		require.NoError(t, err, "GetTwin")
		reported++
		require.Equal(t, reported, tw.Reported.Version, "reported $version after report %d", i)
		if overMQTT {
			m := patchResponseTopic.FindStringSubmatch(p.lastWire())
			require.NotNil(t, m, "the hub's response to report %d: %q; want $iothub/twin/res/204/?$rid=…&$version=n, empty body", i, p.lastWire())
			require.Equal(t, strconv.FormatInt(reported, 10), m[1], "$version in the hub's response to report %d", i)
		}
	}
	sameJSON(t, map[string]any{"$version": reported, "iothubDM": reboot, "fwVersion": "1.0.1"}, section(tw.Reported),
		"the reported properties the service reads")

	// Desired-property events: the SDK replays the section when the
	// listener is added, then relays each patch the hub pushes, in order,
	// with its $version.
	p.ok(t, map[string]any{"op": "subscribe"})
	sameJSON(t, section(tw.Desired), p.nextDesired(t, "initial"), "the desired section replayed on subscription")
	var pushed []map[string]any
	for _, patch := range []map[string]any{
		{"telemetryInterval": 10},
		{"fw": map[string]any{"version": "1.1", "url": "https://example.com/fw.bin"}},
		{"telemetryInterval": nil, "fw": map[string]any{"url": nil}, "mode": "eco"},
	} {
		tw, err = svc.UpdateTwin(ctx, id, &service.TwinPatch{Desired: patch}, nil)
		require.NoError(t, err, "UpdateTwin %s", mustJSON(patch))
		pushed = append(pushed, withVersion(patch, tw.Desired.Version))
	}
	for i, want := range pushed {
		sameJSON(t, want, p.nextDesired(t, "push"), "desired push %d", i)
	}
	if overMQTT {
		p.mu.Lock()
		var versions []string
		for _, w := range p.wire {
			if m := desiredPushTopic.FindStringSubmatch(w); m != nil {
				versions = append(versions, m[1])
			}
		}
		p.mu.Unlock()
		var want []string
		for _, w := range pushed {
			want = append(want, strconv.FormatInt(w["$version"].(int64), 10))
		}
		require.Equal(t, want, versions, "$version in the desired push topics")
	}

	// A reported patch that breaks a key rule ('.' in a name) is refused by
	// the hub, reported by the SDK as an error, and nothing is stored.
	a := p.do(t, map[string]any{"op": "report", "patch": map[string]any{"bad.key": 1, "ok": 2}})
	e, _ := a["error"].(map[string]any)
	require.NotNil(t, e, "the Node SDK accepted a reported patch with the key \"bad.key\" (hub response %q)", p.lastWire())
	t.Logf("the Node SDK's error for a bad reported patch over %s: %s", tr, mustJSON(e))
	if overMQTT {
		m := errorResponse.FindStringSubmatch(p.lastWire())
		require.NotNil(t, m, "the hub's response to the bad patch: %q", p.lastWire())
		assert.Equal(t, "400", m[1], "status of the hub's response to the bad patch")
		assert.Contains(t, m[2], `"errorCode":400004`, "body of the hub's response to the bad patch")
	} else {
		// The AMQP twin client turns status 400 into a FormatError whose
		// message is the JSON-parsed body; the transport wraps it in an
		// Error "could not update twin reported properties. <body.message>".
		msg, _ := e["message"].(string)
		assert.True(t, strings.HasPrefix(msg, "could not update twin reported properties. "),
			"the Node AMQP SDK's error: %s; want the hub's message appended", mustJSON(e))
		assert.Contains(t, msg, "bad.key", "the Node AMQP SDK's error: want the hub's message, which names the key")
		cause, _ := e["cause"].(map[string]any)
		assert.Equal(t, "FormatError", cause["name"], "the twin client's error for the hub's answer: %s", mustJSON(e))
		amqpMsg, _ := cause["amqp"].(map[string]any)
		ann, _ := amqpMsg["annotations"].(map[string]any)
		assert.Equal(t, float64(400), ann["status"], "status annotation of the hub's answer: %s", mustJSON(e))
		body, _ := amqpMsg["body"].(string)
		assert.Contains(t, body, `"errorCode":400004`, "body of the hub's answer")
	}
	after, err := svc.GetTwin(ctx, id)
	require.NoError(t, err, "GetTwin")
	sameJSON(t, section(tw.Reported), section(after.Reported), "the reported properties after the refused patch")

	// A second getTwin() refreshes the desired section to the hub's.
	got = p.ok(t, map[string]any{"op": "get"})["twin"]
	sameJSON(t, map[string]any{"desired": section(after.Desired), "reported": section(after.Reported)}, got,
		"the twin get() returned")
	sameJSON(t, section(after.Desired), p.nextDesired(t, "get"), "the desired section the SDK fires after get()")
	p.noMorePushes(t)
}

// nodeRegistry runs twin_service.js (the official Node Registry) on
// deviceID's twin, checks each step, and returns the desired patches the
// device must be pushed, with their $version.
func nodeRegistry(t *testing.T, h *hubProc, deviceID string) []map[string]any {
	t.Helper()
	res, code := nodeJSON(t, "twin_service.js", "SERVICE_CS="+h.serviceCS, "DEVICE_ID="+deviceID,
		"MISSING_ID=tw-missing", "CA_FILE="+h.caFile)
	require.Equal(t, 0, code, "twin_service.js exit status: %s", mustJSON(res))
	field := func(k string) map[string]any { m, _ := res[k].(map[string]any); return m }
	desired := func(k string) map[string]any {
		props, _ := field(k)["properties"].(map[string]any)
		d, _ := props["desired"].(map[string]any)
		return d
	}
	userKeys := func(m map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			if !strings.HasPrefix(k, "$") {
				out[k] = v
			}
		}
		return out
	}
	num := func(v any) int64 { f, _ := v.(float64); return int64(f) }

	got, updated, etagged, forced, final := field("got"), field("updated"), field("etagged"), field("forced"), field("final")
	require.Equal(t, deviceID, got["deviceId"], "getTwin: %s", mustJSON(got))
	d0 := num(desired("got")["$version"])
	for i, k := range []string{"got", "updated", "etagged", "forced"} {
		assert.Equal(t, d0+int64(i), num(desired(k)["$version"]), "%s: desired $version", k)
		etag, _ := field(k)["etag"].(string)
		assert.NotEmpty(t, etag, "%s: etag", k)
	}
	assert.NotEqual(t, got["etag"], updated["etag"], "the etag after twin.update()")
	assert.NotEqual(t, updated["etag"], etagged["etag"], "the etag after updateTwin()")
	// Twin.update() copies only properties, tags and etag from the answer,
	// so updated["version"] is still got's.
	assert.Less(t, num(got["version"]), num(etagged["version"]), "twin version after updateTwin()")
	assert.Less(t, num(etagged["version"]), num(forced["version"]), "twin version after updateTwin(*)")

	sameJSON(t, map[string]any{"site": "b-12", "floor": 2}, updated["tags"], "tags after twin.update()")
	sameJSON(t, map[string]any{"setpoint": 21, "mode": map[string]any{"fan": "auto"}}, userKeys(desired("updated")), "desired after twin.update()")
	sameJSON(t, map[string]any{"site": "b-12"}, etagged["tags"], "tags after updateTwin()")
	sameJSON(t, map[string]any{"setpoint": 22, "mode": map[string]any{}}, userKeys(desired("etagged")), "desired after updateTwin()")
	sameJSON(t, map[string]any{"setpoint": 22, "mode": map[string]any{"light": "on"}}, userKeys(desired("forced")), "desired after updateTwin(*)")
	sameJSON(t, userKeys(desired("forced")), userKeys(desired("final")), "desired read back")
	sameJSON(t, forced["tags"], final["tags"], "tags read back")
	assert.Equal(t, forced["etag"], final["etag"], "etag read back")

	// A stale etag: 412 PreconditionFailed (412001). The Node SDK's
	// RestApiClient.translateError maps every 412 to InvalidEtagError.
	stale := field("stale")
	assert.Equal(t, float64(412), stale["statusCode"], "updateTwin with a stale etag: %s", mustJSON(stale))
	assert.Equal(t, "InvalidEtagError", stale["name"], "updateTwin with a stale etag: %s", mustJSON(stale))
	body, _ := stale["body"].(string)
	assert.Contains(t, body, "ErrorCode:PreconditionFailed;", "the 412 body")
	for _, k := range []string{"missingGet", "missingUpdate"} {
		e := field(k)
		assert.Equal(t, "DeviceNotFoundError", e["name"], "%s: %s", k, mustJSON(e))
		assert.Equal(t, float64(404), e["statusCode"], "%s: %s", k, mustJSON(e))
	}

	return []map[string]any{
		withVersion(map[string]any{"setpoint": 21, "mode": map[string]any{"fan": "auto"}}, d0+1),
		withVersion(map[string]any{"setpoint": 22, "mode": map[string]any{"fan": nil}}, d0+2),
		withVersion(map[string]any{"mode": map[string]any{"light": "on"}}, d0+3),
	}
}
