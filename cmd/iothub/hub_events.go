package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// maxPrintedBody is how much of a message body --print-events shows.
const maxPrintedBody = 200

// eventLineProps is the JSON properties field of an EVENT line.
type eventLineProps struct {
	MessageID       string            `json:"messageId,omitempty"`
	CorrelationID   string            `json:"correlationId,omitempty"`
	ContentType     string            `json:"contentType,omitempty"`
	ContentEncoding string            `json:"contentEncoding,omitempty"`
	Properties      map[string]string `json:"properties,omitempty"`
}

// formatEventLine renders one device-to-cloud message for --print-events:
//
//	EVENT dev1 mqtt {"messageId":"m-1","contentType":"application/json","properties":{"k":"v"}} "{\"temp\":21.5}"
//
// The identity is "deviceId" or "deviceId/moduleId"; the JSON object
// holds the system properties that are set and the application
// properties (keys sorted); the body is Go-quoted, cut at 200 bytes and
// then followed by "… (N bytes)".
func formatEventLine(ev engine.Event) string {
	var props bytes.Buffer
	enc := json.NewEncoder(&props)
	enc.SetEscapeHTML(false) // print & < > as they are
	_ = enc.Encode(eventLineProps{
		MessageID: ev.MessageID, CorrelationID: ev.CorrelationID,
		ContentType: ev.ContentType, ContentEncoding: ev.ContentEncoding,
		Properties: ev.Properties,
	})
	body := ev.Body
	more := ""
	if len(body) > maxPrintedBody {
		body, more = body[:maxPrintedBody], fmt.Sprintf("… (%d bytes)", len(ev.Body))
	}
	id := ev.Identity
	id.HostName = ""
	return fmt.Sprintf("EVENT %s %s %s %s%s", id.String(), ev.Protocol, bytes.TrimSuffix(props.Bytes(), []byte("\n")),
		strconv.Quote(string(body)), more)
}

// eventDoc is one device-to-cloud message in "iothub hub --print-events
// --output json".
type eventDoc struct {
	Type            string            `json:"type"` // "event"
	DeviceID        string            `json:"deviceId"`
	ModuleID        string            `json:"moduleId,omitempty"`
	Protocol        string            `json:"protocol"`
	MessageID       string            `json:"messageId,omitempty"`
	CorrelationID   string            `json:"correlationId,omitempty"`
	ContentType     string            `json:"contentType,omitempty"`
	ContentEncoding string            `json:"contentEncoding,omitempty"`
	Properties      map[string]string `json:"properties,omitempty"`
	// Body is the whole body when it is UTF-8; BodyBase64 otherwise.
	Body         *string   `json:"body,omitempty"`
	BodyBase64   []byte    `json:"bodyBase64,omitempty"`
	EnqueuedTime time.Time `json:"enqueuedTime"`
}

// eventJSON renders one device-to-cloud message for --print-events
// --output json.
func eventJSON(ev engine.Event) eventDoc {
	d := eventDoc{
		Type: "event", DeviceID: ev.Identity.DeviceID, ModuleID: ev.Identity.ModuleID, Protocol: ev.Protocol,
		MessageID: ev.MessageID, CorrelationID: ev.CorrelationID,
		ContentType: ev.ContentType, ContentEncoding: ev.ContentEncoding,
		Properties: ev.Properties, EnqueuedTime: ev.EnqueuedTime.UTC(),
	}
	if utf8.Valid(ev.Body) {
		body := string(ev.Body)
		d.Body = &body
	} else {
		d.BodyBase64 = ev.Body
	}
	return d
}

// startEventPrinter prints every device-to-cloud message the engine
// accepts, one line each (formatEventLine, or eventJSON with outputJSON),
// until ctx ends or the returned stop is called; stop waits for the
// printer to finish.
func startEventPrinter(ctx context.Context, e *engine.Engine, w io.Writer, out output) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var seq uint64
		for {
			evs, next, err := e.EventsAfter(ctx, seq)
			if err != nil {
				return
			}
			seq = next
			for _, ev := range evs {
				if out == outputJSON {
					_ = writeJSON(w, eventJSON(ev))
				} else {
					fmt.Fprintln(w, formatEventLine(ev))
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
