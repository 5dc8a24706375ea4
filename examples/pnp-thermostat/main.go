// Command pnp-thermostat is an IoT Plug and Play device and the back-end
// that drives it, in one program against an in-process hub:
//
//	go run ./examples/pnp-thermostat                  # MQTT
//	go run ./examples/pnp-thermostat -transport amqp  # or mqtt-ws, amqp-ws
//	go run ./examples/pnp-thermostat -target 30       # the temperature the back-end asks for
//
// The device implements the model dtmi:com:example:TemperatureController;2,
// whose component thermostat1 (a dtmi:com:example:Thermostat;1) has a
// writable property, targetTemperature, and a command, getMaxMinReport. It
// announces the model with device.ClientOptions.ModelID when it connects,
// and the hub shows it as the twin's modelId.
//
// Plug and Play maps a model onto plain twins and direct methods, with a
// few conventions (Microsoft's "IoT Plug and Play conventions"):
//   - A component's command is the direct method "component*command", so
//     the device registers SetMethodHandler("thermostat1*getMaxMinReport", …).
//   - A component's properties sit in an object named after it and marked
//     "__t": "c", in desired and reported properties alike.
//   - The device acknowledges each writable property it receives by
//     reporting {"value": v, "ac": code, "av": desired $version, "ad":
//     "description"} under the property's name: ac 200 for done, 400 for a
//     value it refuses.
//
// The back-end sets the desired thermostat1.targetTemperature with
// service.Client.UpdateTwin, reads the twin until the device has
// acknowledged that version, invokes thermostat1*getMaxMinReport, and
// reads back modelId and the acknowledgement from the twin.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	"github.com/iothub-go/iothub/transport/mqtt"
)

const (
	// modelID is the DTDL model the device implements.
	modelID = "dtmi:com:example:TemperatureController;2"
	// component is the thermostat component's name in the model.
	component = "thermostat1"
	// maxMinCommand is the component's getMaxMinReport command as a direct
	// method: component*command.
	maxMinCommand = component + "*getMaxMinReport"
	// deviceID is the device the program registers.
	deviceID = "pnp-thermostat"
	// startTemperature is the thermostat's reading when it starts, in °C.
	startTemperature = 21.0
)

// config is what the command line says.
type config struct {
	// Transport is the device transport: mqtt, mqtt-ws, amqp or amqp-ws.
	Transport string
	// Target is the targetTemperature the back-end sets, in °C.
	Target float64
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Transport, "transport", "mqtt", "device transport: mqtt, mqtt-ws, amqp or amqp-ws")
	flag.Float64Var(&cfg.Target, "target", 25.5, "the targetTemperature the back-end sets, in °C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pnp-thermostat:", err)
		os.Exit(1)
	}
}

// run starts a hub in-process and plays the flow on it.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if _, err := newTransport(cfg.Transport); err != nil {
		return err
	}
	hub, err := iothubtest.Start(nil)
	if err != nil {
		return err
	}
	defer hub.Close()
	fmt.Fprintf(out, "hub:     started in-process at %s\n", hub.Addr())
	return runOn(ctx, hub, cfg, out)
}

// runOn connects the device to hub and plays the back-end.
func runOn(ctx context.Context, hub *iothubtest.Server, cfg config, out io.Writer) error {
	tr, err := newTransport(cfg.Transport)
	if err != nil {
		return err
	}

	// 1. A device registered through the service client.
	httpClient := hub.HTTPClient()
	defer httpClient.CloseIdleConnections()
	svcOpts := &service.ClientOptions{}
	svcOpts.Transport = httpClient
	svc, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), svcOpts)
	if err != nil {
		return err
	}
	d, err := svc.CreateDevice(ctx, &service.Device{DeviceID: deviceID})
	if err != nil {
		return err
	}
	devCS, err := svc.DeviceConnectionString(d, service.KeyKindPrimary)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: registered %s\n", deviceID)

	// 2. The device: its model id, the component command, and the
	// writable property, all registered before Connect so that the first
	// connection subscribes to both.
	dev, err := device.NewClientFromConnectionString(devCS, &device.ClientOptions{
		Transport: tr,
		TLSConfig: hub.TLSConfig(),
		ModelID:   modelID,
	})
	if err != nil {
		return err
	}
	defer dev.Close(context.WithoutCancel(ctx))
	th := newThermostat(time.Now())
	if err := dev.SetMethodHandler(maxMinCommand, th.getMaxMinReport); err != nil {
		return err
	}
	err = dev.SetDesiredPropertiesHandler(func(ctx context.Context, patch device.TwinProperties) {
		ack, ok := th.applyDesired(patch, time.Now())
		if !ok {
			return // nothing for thermostat1.targetTemperature
		}
		if ack.Code == 200 {
			fmt.Fprintf(out, "device:  set %s.targetTemperature to %s (desired version %d); acknowledging with ac 200\n", component, ack.Value, ack.Version)
		} else {
			fmt.Fprintf(out, "device:  refused %s.targetTemperature (desired version %d); acknowledging with ac %d\n", component, ack.Version, ack.Code)
		}
		_, err := dev.UpdateReportedProperties(ctx, map[string]any{
			component: map[string]any{"__t": "c", "targetTemperature": ack},
		})
		if err != nil {
			fmt.Fprintf(out, "device:  reporting the acknowledgement failed: %v\n", err)
		}
	})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := dev.Connect(cctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "device:  %s connected over %s as %s\n", deviceID, tr.Name(), modelID)

	// 3. The back-end sets the writable property. Component properties
	// carry the marker "__t": "c".
	twin, err := svc.UpdateTwin(ctx, deviceID, &service.TwinPatch{Desired: map[string]any{
		component: map[string]any{"__t": "c", "targetTemperature": cfg.Target},
	}}, nil)
	if err != nil {
		return err
	}
	version := twin.Desired.Version
	fmt.Fprintf(out, "service: set desired %s.targetTemperature = %v (desired version %d)\n", component, cfg.Target, version)

	// 4. It reads the twin until the device has acknowledged that version.
	ack, err := waitForAck(ctx, svc, version)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: the device acknowledged version %d: ac %d, value %s, %q\n", ack.Version, ack.Code, ack.Value, ack.Description)

	// 5. It invokes the component command, as component*command.
	since := time.Now().Add(-time.Minute).UTC()
	res, err := svc.InvokeDeviceMethod(ctx, deviceID, service.CloudToDeviceMethod{
		MethodName:      maxMinCommand,
		Payload:         since.Format(time.RFC3339),
		ResponseTimeout: 30 * time.Second,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: %s answered %d %s\n", maxMinCommand, res.Status, res.Payload)

	// 6. And reads back the model id and the acknowledgement.
	if twin, err = svc.GetTwin(ctx, deviceID); err != nil {
		return err
	}
	fmt.Fprintf(out, "service: twin modelId %s\n", twin.ModelID)
	fmt.Fprintf(out, "service: twin reported %s: %s\n", component, twin.Reported.Properties[component])
	return nil
}

// waitForAck reads the device twin every 100 ms, for up to 30 s, until
// the reported acknowledgement of thermostat1.targetTemperature is for
// desired version (or a later one).
func waitForAck(ctx context.Context, svc *service.Client, version int64) (*ack, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		twin, err := svc.GetTwin(ctx, deviceID)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("%s did not acknowledge desired version %d within 30 s", deviceID, version)
			}
			return nil, err
		}
		var reported struct {
			TargetTemperature *ack `json:"targetTemperature"`
		}
		if raw, ok := twin.Reported.Properties[component]; ok {
			if err := json.Unmarshal(raw, &reported); err != nil {
				return nil, fmt.Errorf("reported %s: %w", component, err)
			}
		}
		if a := reported.TargetTemperature; a != nil && a.Version >= version {
			return a, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
}

// ack is a Plug and Play writable-property acknowledgement, the reported
// value of the property.
type ack struct {
	// Value is the value the device now has, as JSON.
	Value json.RawMessage `json:"value"`
	// Code is an HTTP-like status: 200 done, 202 in progress, 400 refused.
	Code int `json:"ac"`
	// Version is the desired properties' $version acknowledged.
	Version int64 `json:"av"`
	// Description says what happened.
	Description string `json:"ad,omitempty"`
}

// thermostat is the thermostat1 component: its target and the readings it
// took.
type thermostat struct {
	mu       sync.Mutex
	target   float64
	readings []reading
}

type reading struct {
	at   time.Time
	temp float64
}

func newThermostat(now time.Time) *thermostat {
	return &thermostat{target: startTemperature, readings: []reading{{now, startTemperature}}}
}

// applyDesired applies a desired-properties patch (or the whole desired
// section) to the thermostat and returns the acknowledgement to report;
// false if the patch says nothing of thermostat1.targetTemperature.
func (th *thermostat) applyDesired(patch device.TwinProperties, now time.Time) (ack, bool) {
	var comp map[string]json.RawMessage
	if raw, ok := patch.Properties[component]; !ok || json.Unmarshal(raw, &comp) != nil {
		return ack{}, false // absent, or null: the component's properties were removed
	}
	raw, ok := comp["targetTemperature"]
	if !ok || string(raw) == "null" {
		return ack{}, false
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	var target float64
	if err := json.Unmarshal(raw, &target); err != nil || target < -50 || target > 100 {
		// Refused: the value reported stays the one the thermostat keeps.
		cur, _ := json.Marshal(th.target)
		return ack{Value: cur, Code: 400, Version: patch.Version, Description: "targetTemperature must be a number of °C from -50 to 100"}, true
	}
	// A real thermostat would heat or cool for a while, reporting ac 202
	// meanwhile; this one gets there at once.
	th.target = target
	th.readings = append(th.readings, reading{now, target})
	v, _ := json.Marshal(target)
	return ack{Value: v, Code: 200, Version: patch.Version, Description: "Successfully updated target temperature"}, true
}

// maxMinReport is getMaxMinReport's answer (the Thermostat;1 schema).
type maxMinReport struct {
	MaxTemp   float64 `json:"maxTemp"`
	MinTemp   float64 `json:"minTemp"`
	AvgTemp   float64 `json:"avgTemp"`
	StartTime string  `json:"startTime"`
	EndTime   string  `json:"endTime"`
}

// getMaxMinReport answers thermostat1*getMaxMinReport: the highest,
// lowest and average temperature since the time in the payload (a JSON
// date-time string; none means since the start).
func (th *thermostat) getMaxMinReport(_ context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
	var since time.Time
	if len(req.Payload) > 0 && string(req.Payload) != "null" {
		var s string
		if err := json.Unmarshal(req.Payload, &s); err != nil {
			return nil, &device.MethodError{Status: 400, Message: "the payload must be a date-time string"}
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return nil, &device.MethodError{Status: 400, Message: "the payload must be an RFC 3339 date-time"}
		}
		since = t
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	var r maxMinReport
	n := 0
	for _, rd := range th.readings {
		if rd.at.Before(since) {
			continue
		}
		if n == 0 {
			r.MaxTemp, r.MinTemp, r.StartTime = rd.temp, rd.temp, rd.at.UTC().Format(time.RFC3339)
		}
		r.MaxTemp, r.MinTemp = max(r.MaxTemp, rd.temp), min(r.MinTemp, rd.temp)
		r.AvgTemp += rd.temp
		r.EndTime = rd.at.UTC().Format(time.RFC3339)
		n++
	}
	if n == 0 {
		return nil, &device.MethodError{Status: 404, Message: "no readings since " + since.UTC().Format(time.RFC3339)}
	}
	r.AvgTemp /= float64(n)
	return device.JSONResponse(200, r)
}

// newTransport maps a -transport name to a device transport. HTTPS is not
// offered: IoT Hub gives devices neither direct methods nor twins over it.
func newTransport(name string) (transport.Transport, error) {
	switch name {
	case "mqtt", "":
		return mqtt.New(nil), nil
	case "mqtt-ws":
		return mqtt.New(&mqtt.Options{WebSocket: true}), nil
	case "amqp":
		return amqp.New(nil), nil
	case "amqp-ws":
		return amqp.New(&amqp.Options{WebSocket: true}), nil
	}
	return nil, fmt.Errorf("-transport %q: want mqtt, mqtt-ws, amqp or amqp-ws (Plug and Play needs twins and direct methods, which HTTPS does not carry)", name)
}
