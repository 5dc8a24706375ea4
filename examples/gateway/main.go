// Command gateway is a protocol gateway: it speaks for many leaf devices
// (sensors on a field bus that cannot reach IoT Hub themselves), each as
// its own IoT Hub identity, and puts all of them on a few shared AMQP
// connections with amqp.Pool instead of one TLS connection each. Every
// identity keeps its own method handler, token and reconnects; the back
// end sees ordinary devices.
//
//	go run ./examples/gateway                    # an in-process hub, 50 sensors on one connection
//	go run ./examples/gateway -sensors 2500      # 2,500 sensors on three connections (995 each)
//
// Against your own hub (a local `iothub hub` or Azure) give a service
// connection string with RegistryWrite and ServiceConnect; the gateway
// creates the sensors' identities it does not find (gw-sensor-0000, …):
//
//	export IOTHUB_SERVICE_CONNECTION_STRING='HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…'
//	go run ./examples/gateway [-ca-file ca.pem]
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport/amqp"
)

// config is what the command line and the environment say.
type config struct {
	// Sensors is how many leaf devices the gateway speaks for.
	Sensors int
	// PerConn is how many identities share one AMQP connection (0: the
	// pool's default, 995).
	PerConn int
	// ServiceConnectionString selects an existing hub; "" means an
	// in-process hub.
	ServiceConnectionString string
	// CAFile is a PEM file of CA certificates to trust (a local hub's
	// --ca-file); "" means the system roots.
	CAFile string
}

func main() {
	cfg := config{ServiceConnectionString: os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING")}
	flag.IntVar(&cfg.Sensors, "sensors", 50, "leaf devices behind the gateway")
	flag.IntVar(&cfg.PerConn, "per-conn", 0, "identities per AMQP connection (0: 995, at most 1000)")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA certificates to trust (for `iothub hub`)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// sensor is one leaf device: what the field bus says it measures.
type sensor struct {
	id      string
	celsius float64
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Sensors < 1 {
		return errors.New("-sensors must be at least 1")
	}
	svcCS := cfg.ServiceConnectionString
	svcOpts := &service.ClientOptions{}
	var tlsConf *tls.Config
	if svcCS == "" {
		hub, err := iothubtest.Start(nil)
		if err != nil {
			return err
		}
		defer hub.Close()
		fmt.Fprintf(out, "hub:     started in-process at %s\n", hub.Addr())
		svcCS = hub.ServiceConnectionString()
		hc := hub.HTTPClient()
		defer hc.CloseIdleConnections()
		svcOpts.ClientOptions = azcore.ClientOptions{Transport: hc}
		tlsConf = hub.TLSConfig()
	} else {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return err
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s holds no PEM certificate", cfg.CAFile)
			}
			tlsConf.RootCAs = roots
		}
		svcOpts.Transport = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	}
	svc, err := service.NewClientFromConnectionString(svcCS, svcOpts)
	if err != nil {
		return err
	}
	defer svc.Close(context.WithoutCancel(ctx))

	// The gateway's identities: one per sensor, created if missing.
	sensors := make([]sensor, cfg.Sensors)
	connStrs := make([]string, cfg.Sensors)
	for i := range sensors {
		sensors[i] = sensor{id: fmt.Sprintf("gw-sensor-%04d", i), celsius: 18 + float64(i%70)/10}
		d, err := svc.GetDevice(ctx, sensors[i].id)
		if errors.Is(err, service.ErrDeviceNotFound) {
			d, err = svc.CreateDevice(ctx, &service.Device{DeviceID: sensors[i].id})
		}
		if err != nil {
			return fmt.Errorf("identity of %s: %w", sensors[i].id, err)
		}
		if connStrs[i], err = svc.DeviceConnectionString(d, service.KeyKindPrimary); err != nil {
			return err
		}
	}

	// One pool for every sensor: the clients share its AMQP connections.
	pool, err := amqp.NewPool(&amqp.PoolOptions{DevicesPerConn: cfg.PerConn})
	if err != nil {
		return err
	}
	defer pool.Close()
	clients := make([]*device.Client, len(sensors))
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, c := range clients {
			if c != nil {
				_ = c.Close(cctx)
			}
		}
	}()
	for i, s := range sensors {
		c, err := device.NewClientFromConnectionString(connStrs[i], &device.ClientOptions{Transport: pool, TLSConfig: tlsConf})
		if err != nil {
			return err
		}
		// Each identity answers for its own sensor.
		if err := c.SetMethodHandler("readTemperature", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
			return device.JSONResponse(200, map[string]any{"sensor": s.id, "celsius": s.celsius})
		}); err != nil {
			return err
		}
		clients[i] = c
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	sem := make(chan struct{}, 200)
	for i, c := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = c.Connect(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	st := pool.Stats()
	fmt.Fprintf(out, "gateway: %d sensors connected as %d identities over %d AMQP connection(s) in %v\n",
		len(sensors), st.Devices, st.Conns, time.Since(start).Round(time.Millisecond))

	// The back end reads every sensor through its own identity.
	results := svc.InvokeDeviceMethods(ctx, ids(sensors), service.CloudToDeviceMethod{MethodName: "readTemperature", ResponseTimeout: 30 * time.Second}, nil)
	answered := 0
	for i, r := range results {
		if r.Err != nil {
			return fmt.Errorf("%s: %w", r.DeviceID, r.Err)
		}
		if r.Result.Status == 200 {
			answered++
		}
		if i < 3 {
			fmt.Fprintf(out, "service: %s answered %d %s\n", r.DeviceID, r.Result.Status, r.Result.Payload)
		}
	}
	fmt.Fprintf(out, "service: readTemperature on %d sensors: %d answered 200\n", len(results), answered)
	return nil
}

func ids(ss []sensor) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.id
	}
	return out
}
