package service_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// Send a cloud-to-device message to a device that is offline, then read
// the feedback once the device has connected and completed it. Here the
// hub is a local one and the device a few lines of MQTT; against Azure,
// only the connection string changes.
func ExampleClient_Send() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	devCS := hub.AddDevice(exampleT{}, "thermostat-1")

	hc := hub.HTTPClient() // trusts the local hub: HTTPS and AMQP alike
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background()) // the AMQP connection
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	feedback, err := c.NewFeedbackReceiver(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer feedback.Close(ctx)

	err = c.Send(ctx, "thermostat-1", &service.C2DMessage{
		Body:       []byte(`{"setpoint":21.5}`),
		MessageID:  "setpoint-0001",
		Properties: map[string]string{"kind": "setpoint"},
		TTL:        10 * time.Minute,
		Ack:        service.AckFull,
	})
	fmt.Println("queued:", err == nil)

	err = c.Send(ctx, "no-such-device", &service.C2DMessage{Body: []byte("x")})
	fmt.Println("unknown device:", errors.Is(err, service.ErrDeviceNotFound))

	stop := startC2DDevice(hub, devCS) // receives and completes the message
	defer stop()

	batch, err := feedback.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range batch.Records {
		fmt.Println(r.OriginalMessageID, r.DeviceID, r.Status)
	}
	if err := batch.Complete(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// queued: true
	// unknown device: true
	// setpoint-0001 thermostat-1 Success
}

// startC2DDevice connects a device over MQTT that takes its
// cloud-to-device messages at QoS 1: paho's PUBACK completes each one.
func startC2DDevice(hub *iothubtest.Server, connStr string) (stop func()) {
	cs, err := auth.ParseDeviceConnectionString(connStr)
	if err != nil {
		log.Fatal(err)
	}
	tp, err := cs.TokenProvider(nil)
	if err != nil {
		log.Fatal(err)
	}
	tok, err := tp.Token(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker("tls://" + cs.Address()).SetClientID(cs.DeviceID).
		SetUsername(cs.HostName + "/" + cs.DeviceID + "/?api-version=" + service.DefaultAPIVersion).SetPassword(tok.Value).
		SetTLSConfig(hub.TLSConfig()).SetProtocolVersion(4).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tk := c.Connect(); tk.Wait() && tk.Error() != nil {
		log.Fatal(tk.Error())
	}
	tk := c.Subscribe("devices/"+cs.DeviceID+"/messages/devicebound/#", 1, func(paho.Client, paho.Message) {})
	if tk.Wait() && tk.Error() != nil {
		log.Fatal(tk.Error())
	}
	return func() { c.Disconnect(50) }
}
