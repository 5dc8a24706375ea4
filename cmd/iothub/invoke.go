package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/service"
)

// invokeConfig is the parsed command line of "iothub invoke".
type invokeConfig struct {
	connStr         string
	device          string
	module          string
	method          string
	payload         json.RawMessage // nil: none (null)
	responseTimeout time.Duration
	connectTimeout  time.Duration
	caFile          string
	output          output
}

// Exit statuses of "iothub invoke" beyond exitOK, exitFailure and
// exitUsage.
const (
	exitDeviceStatus      = 3 // the device answered with a status outside 200-299
	exitDeviceUnreachable = 4 // the device was not online, or did not answer in time
)

// secondsFlag accepts a Go duration ("30s", "1m") or a number of seconds
// ("30").
type secondsFlag struct{ d *time.Duration }

func (s secondsFlag) String() string {
	if s.d == nil || *s.d == 0 {
		return ""
	}
	return s.d.String()
}

func (s secondsFlag) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		*s.d = time.Duration(n) * time.Second
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("want a duration such as 30s, or a number of seconds")
	}
	*s.d = d
	return nil
}

func parseInvokeFlags(args []string, stderr io.Writer) (*invokeConfig, error) {
	var c invokeConfig
	var payload string
	fs := flag.NewFlagSet("iothub invoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: iothub invoke --device ID [--module ID] --method NAME [flags]

Invokes a direct method and prints the device's answer on stdout.

--output text (the default) prints the status on one line, then the
payload as indented JSON:

  status 200
  {
    "rebooting": true
  }

--output json prints one JSON document: the answer, or the failure when
the hub or the network failed (usage errors print only to stderr):

  {"status":200,"payload":{"rebooting":true}}
  {"error":{"code":404103,"errorCode":"DeviceNotOnline","message":"iothub: 404103 DeviceNotOnline: …","trackingId":"…"}}

`+exitCodesHelp+`  3  the device answered with a status outside 200-299 (the answer is printed)
  4  the device was not online (404103), or did not answer within
     --response-timeout (504101)

flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.connStr, "connection-string", "",
		"hub policy connection string with ServiceConnect (default $IOTHUB_SERVICE_CONNECTION_STRING)")
	fs.StringVar(&c.device, "device", "", "device id (required)")
	fs.StringVar(&c.module, "module", "", "module id, to invoke a module's method")
	fs.StringVar(&c.method, "method", "", "method name (required)")
	fs.StringVar(&payload, "payload", "", "request payload, as JSON (default: none, i.e. null)")
	fs.Var(secondsFlag{&c.responseTimeout}, "response-timeout", "how long the hub waits for the device's answer: a `duration` (e.g. 30s) or seconds, 5s to 300s (default 30s)")
	fs.Var(secondsFlag{&c.connectTimeout}, "connect-timeout", "how long the hub waits for an offline device to connect: a `duration` or seconds, 0s to 300s (default 0s)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM file of CA certificates to trust (e.g. a local hub's --ca-file) instead of the system roots")
	outputFlag(fs, &c.output)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	fromEnv(&c.connStr, "IOTHUB_SERVICE_CONNECTION_STRING")
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("iothub: unexpected argument %q", fs.Arg(0))
	case c.connStr == "":
		return nil, errors.New("iothub: --connection-string or $IOTHUB_SERVICE_CONNECTION_STRING is required")
	case c.device == "":
		return nil, errors.New("iothub: --device is required")
	case c.method == "":
		return nil, errors.New("iothub: --method is required")
	}
	if payload != "" {
		if !json.Valid([]byte(payload)) {
			return nil, errors.New("iothub: --payload is not valid JSON (quote strings: --payload '\"text\"')")
		}
		c.payload = json.RawMessage(payload)
	}
	return &c, nil
}

// runInvoke runs "iothub invoke".
func runInvoke(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseInvokeFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return invoke(ctx, cfg, stdout, stderr)
}

func invoke(ctx context.Context, cfg *invokeConfig, stdout, stderr io.Writer) int {
	c, closeIdle, err := newServiceClient(cfg.connStr, cfg.caFile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	defer closeIdle()
	m := service.CloudToDeviceMethod{MethodName: cfg.method, ResponseTimeout: cfg.responseTimeout, ConnectTimeout: cfg.connectTimeout}
	if cfg.payload != nil {
		m.Payload = cfg.payload
	}
	var res *service.MethodResult
	if cfg.module != "" {
		res, err = c.InvokeModuleMethod(ctx, cfg.device, cfg.module, m)
	} else {
		res, err = c.InvokeDeviceMethod(ctx, cfg.device, m)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		var re *service.ResponseError
		isRE := errors.As(err, &re)
		if isRE && re.TrackingID != "" {
			fmt.Fprintf(stderr, "iothub: tracking ID %s\n", re.TrackingID)
		}
		if errors.Is(err, service.ErrArgumentInvalid) && !isRE {
			return exitUsage // refused before sending
		}
		if cfg.output == outputJSON {
			e := invokeError{Message: err.Error()}
			if isRE {
				e.Code, e.ErrorCode, e.TrackingID = re.Code, string(re.ErrorCode), re.TrackingID
			}
			if werr := writeJSON(stdout, struct {
				Error invokeError `json:"error"`
			}{e}); werr != nil {
				fmt.Fprintf(stderr, "iothub: %v\n", werr)
			}
		}
		if errors.Is(err, service.ErrDeviceNotOnline) || errors.Is(err, service.ErrGatewayTimeout) {
			return exitDeviceUnreachable
		}
		return exitFailure
	}
	if err := printAnswer(stdout, cfg.output, res); err != nil {
		fmt.Fprintf(stderr, "iothub: %v\n", err)
		return exitFailure
	}
	if res.Status < 200 || res.Status > 299 {
		return exitDeviceStatus
	}
	return exitOK
}

// invokeError is the "error" member of "iothub invoke --output json" on a
// failure.
type invokeError struct {
	// Code is the numeric IoT Hub error code (e.g. 404103); absent when
	// the hub sent none or the hub was not reached.
	Code int `json:"code,omitempty"`
	// ErrorCode is the code's name (e.g. "DeviceNotOnline").
	ErrorCode  string `json:"errorCode,omitempty"`
	Message    string `json:"message"`
	TrackingID string `json:"trackingId,omitempty"`
}

// printAnswer prints the device's answer as --output says.
func printAnswer(w io.Writer, out output, res *service.MethodResult) error {
	payload := bytes.TrimSpace(res.Payload)
	if len(payload) == 0 {
		payload = []byte("null")
	}
	if out == outputJSON {
		return writeJSON(w, struct {
			Status  int             `json:"status"`
			Payload json.RawMessage `json:"payload"`
		}{res.Status, payload})
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "status %d\n", res.Status)
	if err := json.Indent(&b, payload, "", "  "); err != nil {
		b.Truncate(0)
		fmt.Fprintf(&b, "status %d\n%s", res.Status, payload)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}
