package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/transports"
	"github.com/iothub-go/iothub/transport"
)

// deviceConfig is the parsed command line of "iothub device".
type deviceConfig struct {
	connStr   string
	transport transport.Transport
	caFile    string
	certFile  string
	keyFile   string
	output    output
	// settle is how the device settles each cloud-to-device message.
	settle device.Disposition
	// pollInterval is MessagePollInterval (HTTPS).
	pollInterval time.Duration
}

func parseDeviceFlags(args []string, stderr io.Writer) (*deviceConfig, error) {
	var c deviceConfig
	var tr string
	fs := flag.NewFlagSet("iothub device", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: iothub device [flags]

Runs a simulated device that answers every direct method with status 200
and {"method":NAME,"payload":REQUEST PAYLOAD}, and settles every
cloud-to-device message as --c2d says, until SIGINT or SIGTERM (then it
exits with status 0). It logs each call on stderr, and prints each change
of its connection state and each cloud-to-device message on stdout. Over
--transport http it receives messages by polling and answers no methods
(IoT Hub has no HTTPS method endpoint for devices).

--output text (the default) prints the state, and why it changed, and one
line per message (its id, the body as a Go-quoted string, the properties):

  connected
  message fw-1 "{\"version\":\"2.0\"}" {"kind":"firmware"} (complete)
  disconnected: iothub: …

--output json prints one JSON document per change or message:

  {"state":"connected"}
  {"message":{"messageId":"fw-1","body":"{\"version\":\"2.0\"}","properties":{"kind":"firmware"},"deliveryCount":0},"settle":"complete"}
  {"state":"disconnected","error":"iothub: …"}

`+exitCodesHelp+`
flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.connStr, "connection-string", "",
		"device or module connection string (default $IOTHUB_DEVICE_CONNECTION_STRING)")
	fs.StringVar(&tr, "transport", "mqtt", "mqtt, mqtt-ws, amqp, amqp-ws or http")
	settle := "complete"
	fs.StringVar(&settle, "c2d", settle, "how to settle each cloud-to-device message: complete, reject or abandon\n(MQTT can only complete: reject and abandon leave the message unsettled)")
	fs.DurationVar(&c.pollInterval, "poll-interval", 10*time.Second, "how often to poll for cloud-to-device messages over --transport http")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM file of CA certificates to trust (e.g. the local hub's --ca-file)")
	fs.StringVar(&c.certFile, "cert-file", "", "PEM client certificate, for x509=true connection strings")
	fs.StringVar(&c.keyFile, "key-file", "", "PEM private key of --cert-file")
	outputFlag(fs, &c.output)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("iothub: unexpected argument %q", fs.Arg(0))
	}
	fromEnv(&c.connStr, "IOTHUB_DEVICE_CONNECTION_STRING")
	if c.connStr == "" {
		return nil, errors.New("iothub: --connection-string (or IOTHUB_DEVICE_CONNECTION_STRING) is required")
	}
	t, err := transports.ByName(tr)
	if err != nil {
		return nil, fmt.Errorf("iothub: --transport: %w", err)
	}
	c.transport = t
	switch settle {
	case "complete":
		c.settle = device.Complete
	case "reject":
		c.settle = device.Reject
	case "abandon":
		c.settle = device.Abandon
	default:
		return nil, fmt.Errorf("iothub: --c2d %q: want complete, reject or abandon", settle)
	}
	if c.pollInterval <= 0 {
		return nil, errors.New("iothub: --poll-interval must be positive")
	}
	if (c.certFile == "") != (c.keyFile == "") {
		return nil, errors.New("iothub: --cert-file and --key-file go together")
	}
	return &c, nil
}

func runDevice(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseDeviceFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serveDevice(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, err)
		return exitCode(err)
	}
	return exitOK
}

// echo answers every method with 200 and {"method":…,"payload":…}. The
// client logs each call (name, status, duration).
func echo(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
	payload := req.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	return device.JSONResponse(200, struct {
		Method  string          `json:"method"`
		Payload json.RawMessage `json:"payload"`
	}{req.Name, payload})
}

// deviceState is what "iothub device --output json" prints for a
// connection status.
type deviceState struct {
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// deviceMessage is what "iothub device --output json" prints for a
// cloud-to-device message.
type deviceMessage struct {
	Message struct {
		MessageID     string            `json:"messageId,omitempty"`
		CorrelationID string            `json:"correlationId,omitempty"`
		Body          string            `json:"body"`
		Properties    map[string]string `json:"properties,omitempty"`
		DeliveryCount int               `json:"deliveryCount"`
	} `json:"message"`
	Settle string `json:"settle"`
}

// printMessage prints one cloud-to-device message as out says.
func printMessage(w io.Writer, out output, m *device.CloudMessage, d device.Disposition) {
	if out == outputJSON {
		var dm deviceMessage
		dm.Message.MessageID, dm.Message.CorrelationID = m.MessageID, m.CorrelationID
		dm.Message.Body, dm.Message.Properties, dm.Message.DeliveryCount = string(m.Body), m.Properties, m.DeliveryCount
		dm.Settle = d.String()
		_ = writeJSON(w, dm)
		return
	}
	props, _ := json.Marshal(m.Properties)
	if m.Properties == nil {
		props = []byte("{}")
	}
	fmt.Fprintf(w, "message %s %q %s (%s)\n", m.MessageID, m.Body, props, d)
}

// printStatus prints one connection status as out says.
func printStatus(w io.Writer, out output, s device.ConnectionStatus) {
	if out == outputJSON {
		st := deviceState{State: s.State.String()}
		if s.Err != nil {
			st.Error = s.Err.Error()
		}
		_ = writeJSON(w, st)
		return
	}
	if s.Err != nil {
		fmt.Fprintf(w, "%s: %v\n", s.State, s.Err)
		return
	}
	fmt.Fprintln(w, s.State)
}

// serveDevice runs a simulated device until ctx ends. Errors in its
// configuration (files, connection string) are usageErrors.
func serveDevice(ctx context.Context, cfg *deviceConfig, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	var printMu sync.Mutex // messages and statuses come from different goroutines
	opts := &device.ClientOptions{
		Transport:           cfg.transport,
		MessagePollInterval: cfg.pollInterval,
		Logger:              log,
		OnConnectionStatus: func(s device.ConnectionStatus) {
			printMu.Lock()
			defer printMu.Unlock()
			printStatus(stdout, cfg.output, s)
		},
	}
	if cfg.caFile != "" {
		pem, err := os.ReadFile(cfg.caFile)
		if err != nil {
			return usageError{fmt.Errorf("iothub: --ca-file: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return usageError{errors.New("iothub: --ca-file holds no PEM certificate")}
		}
		opts.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if cfg.certFile != "" {
		cred, err := auth.LoadX509Credential(cfg.certFile, cfg.keyFile)
		if err != nil {
			return usageError{err}
		}
		opts.X509 = cred
	}
	c, err := device.NewClientFromConnectionString(cfg.connStr, opts)
	if err != nil {
		return usageError{err} // it does no I/O: the connection string or options are wrong
	}
	if cfg.transport.MethodSupport() == nil {
		if err := c.SetDefaultMethodHandler(echo); err != nil {
			return err
		}
	}
	err = c.SetMessageHandler(func(_ context.Context, m *device.CloudMessage) device.Disposition {
		printMu.Lock()
		defer printMu.Unlock()
		printMessage(stdout, cfg.output, m, cfg.settle)
		return cfg.settle
	})
	if err != nil {
		return err
	}
	if err := c.Connect(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while connecting
		}
		c.Close(context.Background())
		return err
	}
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Close(cctx)
}
