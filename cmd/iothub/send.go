package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/service"
)

// "iothub send": a cloud-to-device message, and its feedback.

const sendUsage = `usage: iothub send --device ID --body TEXT [flags]

Sends a cloud-to-device message to a device; the hub keeps it until the
device receives it or it expires. With --ack other than none, waits for
the hub's feedback on the message (up to --wait) and prints it; exits 1
unless the feedback is Success. The feedback queue is the hub's, shared
by every sender: like any feedback receiver, this one consumes what it
reads, other messages' feedback included.

  sent c2d-1712345 to dev1 (feedback: full)
  feedback c2d-1712345 dev1 Success

--output json prints one JSON document per line instead:

  {"sent":{"messageId":"c2d-1712345","deviceId":"dev1","ack":"full"}}
  {"feedback":{"originalMessageId":"c2d-1712345","deviceId":"dev1","status":"Success","description":"Success"}}

`

// sentDoc and feedbackDoc are what --output json prints.
type sentDoc struct {
	Sent struct {
		MessageID string `json:"messageId"`
		DeviceID  string `json:"deviceId"`
		Ack       string `json:"ack"`
	} `json:"sent"`
}

type feedbackDoc struct {
	Feedback struct {
		OriginalMessageID string `json:"originalMessageId"`
		DeviceID          string `json:"deviceId"`
		Status            string `json:"status"`
		Description       string `json:"description,omitempty"`
	} `json:"feedback"`
}

// propsFlag collects --prop name=value.
type propsFlag map[string]string

func (p propsFlag) String() string { return "" }

func (p propsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return errors.New("want name=value")
	}
	p[k] = val
	return nil
}

// runSend runs "iothub send".
func runSend(args []string, stdout, stderr io.Writer) int {
	var (
		f                jobFlags
		deviceID, body   string
		msgID, corrID    string
		contentType, ack string
		ttl, wait        time.Duration
		props            = propsFlag{}
	)
	fs := flag.NewFlagSet("iothub send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), sendUsage+exitCodesHelp+"\nflags:\n")
		fs.PrintDefaults()
	}
	f.register(fs, false)
	fs.StringVar(&deviceID, "device", "", "device id (required)")
	fs.StringVar(&body, "body", "", "the message body, as text")
	fs.StringVar(&msgID, "message-id", "", "message id (default: c2d- and a timestamp); feedback names it")
	fs.StringVar(&corrID, "correlation-id", "", "correlation id")
	fs.StringVar(&contentType, "content-type", "", "content type of the body, e.g. application/json")
	fs.Var(props, "prop", "an application property `name=value` (repeatable)")
	fs.StringVar(&ack, "ack", "none", "feedback to ask for: none, positive, negative or full")
	fs.DurationVar(&ttl, "ttl", 0, "how long the hub keeps the message (default: the hub's, 1h; at most 48h)")
	fs.DurationVar(&wait, "wait", time.Minute, "how long to wait for the feedback (with --ack other than none)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if err := f.check(fs, false); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	if deviceID == "" {
		fmt.Fprintln(stderr, "iothub: --device is required")
		return exitUsage
	}
	acks := map[string]service.AckType{"none": service.AckNone, "positive": service.AckPositive, "negative": service.AckNegative, "full": service.AckFull}
	ackType, ok := acks[ack]
	if !ok {
		fmt.Fprintf(stderr, "iothub: --ack %q: want none, positive, negative or full\n", ack)
		return exitUsage
	}
	if msgID == "" {
		msgID = fmt.Sprintf("c2d-%d", time.Now().UnixNano())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, closeIdle, err := newServiceClient(f.connStr, f.caFile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	defer closeIdle()
	defer c.Close(context.WithoutCancel(ctx))

	// Listen before sending, so that no feedback is missed.
	var fb *service.FeedbackReceiver
	if ackType != service.AckNone {
		if fb, err = c.NewFeedbackReceiver(ctx); err != nil {
			return jobFailed(stderr, err)
		}
		defer fb.Close(context.WithoutCancel(ctx))
	}
	msg := &service.C2DMessage{Body: []byte(body), MessageID: msgID, CorrelationID: corrID, ContentType: contentType,
		Properties: props, TTL: ttl, Ack: ackType}
	if len(props) == 0 {
		msg.Properties = nil
	}
	if err := c.Send(ctx, deviceID, msg); err != nil {
		var re *service.ResponseError
		if errors.Is(err, service.ErrArgumentInvalid) && !errors.As(err, &re) {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		return jobFailed(stderr, err)
	}
	if f.output == outputJSON {
		var d sentDoc
		d.Sent.MessageID, d.Sent.DeviceID, d.Sent.Ack = msgID, deviceID, ack
		_ = writeJSON(stdout, d)
	} else {
		fmt.Fprintf(stdout, "sent %s to %s (feedback: %s)\n", msgID, deviceID, ack)
	}
	if fb == nil {
		return exitOK
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		batch, err := fb.Receive(wctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				fmt.Fprintf(stderr, "iothub: no feedback for %s within %v\n", msgID, wait)
			} else {
				fmt.Fprintln(stderr, err)
			}
			return exitFailure
		}
		var mine *service.FeedbackRecord
		for i, r := range batch.Records {
			if r.OriginalMessageID == msgID && r.DeviceID == deviceID {
				mine = &batch.Records[i]
			}
		}
		// The feedback queue is the hub's, one for every sender: like any
		// feedback receiver, this one completes what it reads.
		if err := batch.Complete(wctx); err != nil {
			fmt.Fprintln(stderr, err)
		}
		if mine == nil {
			continue
		}
		if f.output == outputJSON {
			var d feedbackDoc
			d.Feedback.OriginalMessageID, d.Feedback.DeviceID = mine.OriginalMessageID, mine.DeviceID
			d.Feedback.Status, d.Feedback.Description = string(mine.Status), mine.Description
			_ = writeJSON(stdout, d)
		} else {
			fmt.Fprintf(stdout, "feedback %s %s %s\n", mine.OriginalMessageID, mine.DeviceID, mine.Status)
		}
		if mine.Status != service.FeedbackSuccess {
			return exitFailure
		}
		return exitOK
	}
}
