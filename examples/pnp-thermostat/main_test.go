package main

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
)

// The whole flow on every transport, checked in the output and in the
// hub's twin.
func TestRun(t *testing.T) {
	for _, tr := range []string{"mqtt", "mqtt-ws", "amqp", "amqp-ws"} {
		t.Run(tr, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			var out exampletest.Buffer
			require.NoError(t, runOn(exampletest.Context(t), hub, config{Transport: tr, Target: 25.5}, &out), "run:\n%s", out.String())
			m := regexp.MustCompile(`service: set desired thermostat1\.targetTemperature = 25\.5 \(desired version (\d+)\)`).FindStringSubmatch(out.String())
			require.NotNil(t, m, "the back-end's update:\n%s", out.String())
			v := m[1]
			exampletest.WantInOrder(t, out.String(),
				"service: registered pnp-thermostat",
				"device:  pnp-thermostat connected over "+tr+" as dtmi:com:example:TemperatureController;2",
				"service: set desired thermostat1.targetTemperature = 25.5 (desired version "+v+")",
				"service: the device acknowledged version "+v+`: ac 200, value 25.5, "Successfully updated target temperature"`,
				`service: thermostat1*getMaxMinReport answered 200 {"maxTemp":25.5,"minTemp":21,"avgTemp":23.25,"startTime":"`,
				"service: twin modelId dtmi:com:example:TemperatureController;2",
				"service: twin reported thermostat1: ",
			)
			// The device may get the patch before the back-end prints that
			// it sent it, but it prints before it acknowledges.
			exampletest.WantInOrder(t, out.String(),
				"device:  pnp-thermostat connected over "+tr,
				"device:  set thermostat1.targetTemperature to 25.5 (desired version "+v+"); acknowledging with ac 200",
				"service: the device acknowledged version "+v,
			)

			// The hub's twin: the model id, the desired property and its
			// acknowledgement at that version.
			twin := hub.Twin(t, "pnp-thermostat")
			assert.Equal(t, modelID, twin.ModelID, "the twin's modelId")
			assert.Equal(t, map[string]any{"__t": "c", "targetTemperature": 25.5}, twin.Desired["thermostat1"], "desired thermostat1")
			assert.Equal(t, v, strconv.FormatInt(twin.DesiredVersion, 10), "the printed desired version is the twin's")
			assert.Equal(t, map[string]any{"__t": "c", "targetTemperature": map[string]any{
				"value": 25.5, "ac": float64(200), "av": float64(twin.DesiredVersion), "ad": "Successfully updated target temperature",
			}}, twin.Reported["thermostat1"], "reported thermostat1")

			// The last line is the same acknowledgement, as the back-end
			// read it.
			line := regexp.MustCompile(`service: twin reported thermostat1: (.*)\n`).FindStringSubmatch(out.String())
			require.NotNil(t, line)
			var printed any
			require.NoError(t, json.Unmarshal([]byte(line[1]), &printed), "the printed reported thermostat1 is JSON")
			assert.Equal(t, twin.Reported["thermostat1"], printed, "the printed reported thermostat1")
		})
	}
}

// The program itself, with its own hub.
func TestProgram(t *testing.T) {
	var out exampletest.Buffer
	require.NoError(t, run(exampletest.Context(t), config{Target: 30}, &out), "run:\n%s", out.String())
	exampletest.WantInOrder(t, out.String(), "hub:     started in-process", "acknowledging with ac 200", `"maxTemp":30,"minTemp":21`)
}

func TestBadTransport(t *testing.T) {
	err := run(context.Background(), config{Transport: "http"}, &exampletest.Buffer{})
	assert.ErrorContains(t, err, "want mqtt", "-transport http")
}

func TestApplyDesired(t *testing.T) {
	now := time.Now()
	patch := func(version int64, props string) device.TwinProperties {
		var p map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(props), &p))
		return device.TwinProperties{Version: version, Properties: p}
	}
	th := newThermostat(now)
	for _, props := range []string{`{}`, `{"thermostat1":null}`, `{"thermostat1":{"__t":"c"}}`, `{"thermostat1":{"__t":"c","targetTemperature":null}}`, `{"thermostat2":{"__t":"c","targetTemperature":30}}`} {
		_, ok := th.applyDesired(patch(2, props), now)
		assert.False(t, ok, "nothing to acknowledge in %s", props)
	}

	a, ok := th.applyDesired(patch(3, `{"thermostat1":{"__t":"c","targetTemperature":19}}`), now)
	require.True(t, ok)
	assert.Equal(t, ack{Value: json.RawMessage("19"), Code: 200, Version: 3, Description: "Successfully updated target temperature"}, a)

	// Refused values keep the thermostat's target, which the
	// acknowledgement reports.
	for _, bad := range []string{`"hot"`, `500`, `{"celsius":20}`} {
		a, ok := th.applyDesired(patch(4, `{"thermostat1":{"__t":"c","targetTemperature":`+bad+`}}`), now)
		require.True(t, ok, bad)
		assert.Equal(t, 400, a.Code, "ac for %s", bad)
		assert.Equal(t, int64(4), a.Version, "av for %s", bad)
		assert.JSONEq(t, "19", string(a.Value), "value for %s", bad)
	}
}

func TestGetMaxMinReport(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	th := newThermostat(start)
	_, ok := th.applyDesired(device.TwinProperties{Version: 2, Properties: map[string]json.RawMessage{
		"thermostat1": json.RawMessage(`{"__t":"c","targetTemperature":30}`),
	}}, start.Add(time.Minute))
	require.True(t, ok)

	call := func(payload string) (*device.MethodResponse, error) {
		return th.getMaxMinReport(context.Background(), &device.MethodRequest{Name: maxMinCommand, Payload: json.RawMessage(payload)})
	}
	for _, payload := range []string{"", "null", `"2026-01-02T03:00:00Z"`} {
		res, err := call(payload)
		require.NoError(t, err, payload)
		assert.Equal(t, 200, res.Status, payload)
		assert.JSONEq(t, `{"maxTemp":30,"minTemp":21,"avgTemp":25.5,"startTime":"2026-01-02T03:04:05Z","endTime":"2026-01-02T03:05:05Z"}`, string(res.Payload), payload)
	}
	res, err := call(`"2026-01-02T03:05:00Z"`)
	require.NoError(t, err)
	assert.JSONEq(t, `{"maxTemp":30,"minTemp":30,"avgTemp":30,"startTime":"2026-01-02T03:05:05Z","endTime":"2026-01-02T03:05:05Z"}`, string(res.Payload), "since the second reading")

	for payload, status := range map[string]int{`42`: 400, `"yesterday"`: 400, `"2027-01-01T00:00:00Z"`: 404} {
		_, err := call(payload)
		var me *device.MethodError
		require.True(t, errors.As(err, &me), "payload %s: got %v, want a MethodError", payload, err)
		assert.Equal(t, status, me.Status, "payload %s", payload)
	}
}
