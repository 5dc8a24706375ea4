package service

import (
	"context"
	"sync"
)

// defaultMaxConcurrency is how many calls InvokeDeviceMethods runs at once
// unless InvokeManyOptions says otherwise.
const defaultMaxConcurrency = 16

// InvokeManyOptions configures InvokeDeviceMethods. A nil *InvokeManyOptions
// gives the defaults.
type InvokeManyOptions struct {
	// MaxConcurrency bounds the calls in flight at once. Zero or negative
	// means 16. Mind the hub's method throttle (about 40 small calls per
	// second per unit on S1).
	MaxConcurrency int
}

// DeviceMethodResult is the outcome of one call of InvokeDeviceMethods:
// exactly one of Result and Err is set.
type DeviceMethodResult struct {
	DeviceID string
	Result   *MethodResult
	Err      error
}

// InvokeDeviceMethods invokes the same method on many devices, at most
// opts.MaxConcurrency at a time, and returns one entry per device id in
// the order given (a repeated id is invoked again). Each call behaves as
// InvokeDeviceMethod, retries included; a failure of one device does not
// stop the others. Once ctx ends no new call starts: the devices not yet
// invoked get ctx.Err(), and calls in flight end as InvokeDeviceMethod's
// do. An invalid m fails every entry with the same error, and nothing is
// sent.
//
// Traced, each call it makes is a span like InvokeDeviceMethod's,
// "Client.InvokeDeviceMethod", under ctx's span if it has one: the calls
// are independent operations that run concurrently, and the run has no
// span of its own.
func (c *Client) InvokeDeviceMethods(ctx context.Context, deviceIDs []string, m CloudToDeviceMethod, opts *InvokeManyOptions) []DeviceMethodResult {
	out := make([]DeviceMethodResult, len(deviceIDs))
	for i, id := range deviceIDs {
		out[i].DeviceID = id
	}
	body, timeout, err := m.encode()
	if err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	n := defaultMaxConcurrency
	if opts != nil && opts.MaxConcurrency > 0 {
		n = opts.MaxConcurrency
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i, id := range deviceIDs {
		if err := ctx.Err(); err != nil {
			out[i].Err = err
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			out[i].Err = ctx.Err()
			continue
		}
		if err := ctx.Err(); err != nil {
			// Both cases were ready: do not start a call after ctx ended.
			<-sem
			out[i].Err = err
			continue
		}
		wg.Add(1)
		go func(r *DeviceMethodResult) {
			defer func() { <-sem; wg.Done() }()
			ctx, end := c.startSpan(ctx, "Client.InvokeDeviceMethod")
			defer func() { end(r.Err) }()
			if err := checkID("device", id); err != nil {
				r.Err = err
				return
			}
			r.Result, r.Err = c.send(ctx, deviceMethodsPath(id), body, timeout)
		}(&out[i])
	}
	wg.Wait()
	return out
}
