package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iothub-go/iothub/internal/apiversion"
	"github.com/iothub-go/iothub/transport"
)

// Cloud-to-device messages over HTTPS: the device polls (REST "Receive,
// Complete, Abandon Device Bound Notification"; the official HTTP
// transports do the same):
//
//	GET    /devices/{id}/messages/deviceBound                     200 message | 204 none
//	DELETE /devices/{id}/messages/deviceBound/{lockToken}         complete
//	DELETE /devices/{id}/messages/deviceBound/{lockToken}?reject  reject
//	POST   /devices/{id}/messages/deviceBound/{lockToken}/abandon abandon
//
// The lock token is the answer's ETag without its quotes. Settling sends
// it in the path and, as .NET does, quoted in If-Match (the hub goes by
// the path). Modules have no cloud-to-device queue in IoT Hub.

var errNoSubscribe = fmt.Errorf("%w: over HTTPS the device polls for cloud-to-device messages with ReceiveMessage", transport.ErrUnsupported)

var errModuleC2D = fmt.Errorf("%w: IoT Hub does not deliver cloud-to-device messages to modules", transport.ErrUnsupported)

// SubscribeMessages returns an error wrapping transport.ErrUnsupported:
// over HTTPS the device polls with ReceiveMessage.
func (c *conn) SubscribeMessages(context.Context) error { return errNoSubscribe }

func (c *conn) deviceBoundPath() string {
	return "/devices/" + url.PathEscape(c.id.DeviceID) + "/messages/deviceBound"
}

// newRequest builds a request to the hub with the device's credentials.
func (c *conn) newRequest(ctx context.Context, method, path, query string) (*nethttp.Request, error) {
	req, err := nethttp.NewRequestWithContext(ctx, method, c.base+path+"?api-version="+apiversion.Current+query, nil)
	if err != nil {
		return nil, fmt.Errorf("iothub: http: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("iothub: http: connection closed")
	}
	if c.token != "" {
		req.Header.Set("Authorization", c.token)
	}
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	return req, nil
}

// ReceiveMessage polls once: it returns the next message, locked for this
// device for one minute (until settled), or nil and no error when the
// queue is empty (204).
func (c *conn) ReceiveMessage(ctx context.Context) (*transport.CloudMessage, error) {
	if c.id.ModuleID != "" {
		return nil, errModuleC2D
	}
	path := c.deviceBoundPath()
	req, err := c.newRequest(ctx, nethttp.MethodGet, path, "")
	if err != nil {
		return nil, err
	}
	req.Header.Set("iothub-to", path)
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("iothub: http: receiving a message: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == nethttp.StatusNoContent:
		return nil, nil
	case resp.StatusCode == nethttp.StatusOK:
		body, err := io.ReadAll(io.LimitReader(resp.Body, transport.MaxCloudMessageSize+1))
		if err != nil {
			return nil, fmt.Errorf("iothub: http: reading a message: %w", err)
		}
		if len(body) > transport.MaxCloudMessageSize {
			return nil, fmt.Errorf("iothub: http: the hub sent a message larger than %d bytes", transport.MaxCloudMessageSize)
		}
		m := cloudMessageFromHeader(resp.Header)
		if m.LockToken == "" {
			return nil, errors.New("iothub: http: the hub sent a message without a lock token (ETag)")
		}
		m.Body = body
		return m, nil
	case isRedirect(resp.StatusCode):
		return nil, fmt.Errorf("%w: the hub answered %d with Location %q", ErrRedirect, resp.StatusCode, clip(resp.Header.Get("Location")))
	}
	return nil, statusError(resp)
}

func statusError(resp *nethttp.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return &StatusError{StatusCode: resp.StatusCode, ErrorCode: resp.Header.Get("iothub-errorcode"), Body: string(body)}
}

// cloudMessageFromHeader maps the answer's headers to a message (the
// names the official SDKs read). Unparsable times and counts stay zero.
func cloudMessageFromHeader(h nethttp.Header) *transport.CloudMessage {
	m := &transport.CloudMessage{
		LockToken:       strings.Trim(strings.TrimPrefix(h.Get("ETag"), "W/"), `"`),
		MessageID:       h.Get("iothub-messageid"),
		CorrelationID:   h.Get("iothub-correlationid"),
		UserID:          h.Get("iothub-userid"),
		To:              h.Get("iothub-to"),
		ContentType:     h.Get("iothub-contenttype"),
		ContentEncoding: h.Get("iothub-contentencoding"),
		Ack:             h.Get("iothub-ack"),
		ExpiryTime:      parseHubTime(h.Get("iothub-expiry")),
		EnqueuedTime:    parseHubTime(h.Get("iothub-enqueuedtime")),
	}
	if n, err := strconv.Atoi(h.Get("iothub-deliverycount")); err == nil && n >= 0 {
		m.DeliveryCount = n
	}
	for k, v := range h {
		if len(k) > len(headerAppPrefix) && strings.EqualFold(k[:len(headerAppPrefix)], headerAppPrefix) && len(v) > 0 {
			if m.Properties == nil {
				m.Properties = map[string]string{}
			}
			// Header names reach us canonicalised or lower-case (HTTP/2):
			// property names are reported lower-case.
			m.Properties[strings.ToLower(k[len(headerAppPrefix):])] = v[0]
		}
	}
	return m
}

const headerAppPrefix = "iothub-app-"

// parseHubTime reads an ISO 8601 or RFC 1123 time; zero when it is neither.
func parseHubTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999", nethttp.TimeFormat} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// SettleMessage completes (DELETE), rejects (DELETE ?reject) or abandons
// (POST …/abandon) the message with that lock token and returns once the
// hub answered 204. A lock the hub no longer holds (412, 412002
// DeviceMessageLockLost) gives a *StatusError wrapping
// transport.ErrLockLost.
func (c *conn) SettleMessage(ctx context.Context, lockToken string, d transport.Disposition) error {
	if c.id.ModuleID != "" {
		return errModuleC2D
	}
	if lockToken == "" {
		return fmt.Errorf("%w: empty lock token", transport.ErrLockLost)
	}
	path := c.deviceBoundPath() + "/" + url.PathEscape(lockToken)
	method, query := nethttp.MethodDelete, ""
	switch d {
	case transport.Complete:
	case transport.Reject:
		query = "&reject"
	case transport.Abandon:
		method, path = nethttp.MethodPost, path+"/abandon"
	default:
		return fmt.Errorf("iothub: http: unknown disposition %v", d)
	}
	req, err := c.newRequest(ctx, method, path, query)
	if err != nil {
		return err
	}
	req.Header.Set("iothub-to", path)
	req.Header.Set("If-Match", `"`+lockToken+`"`)
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("iothub: http: settling a message (%v): %w", d, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == nethttp.StatusNoContent || resp.StatusCode == nethttp.StatusOK:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil
	case isRedirect(resp.StatusCode):
		return fmt.Errorf("%w: the hub answered %d with Location %q", ErrRedirect, resp.StatusCode, clip(resp.Header.Get("Location")))
	}
	return statusError(resp)
}
