package service

import (
	"context"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// Listing the registry's devices, a page at a time, through the query API
// (IoT Hub's GET /devices?top=N stops at 1000 devices and is deprecated in
// favour of queries).

// ListDevicesOptions are the optional parameters of NewListDevicesPager.
// A nil *ListDevicesOptions gives the defaults.
type ListDevicesOptions struct {
	// PageSize is the most devices a page holds, 1 to MaxQueryPageSize. 0
	// (the default) leaves it to the hub (100 devices on the local hub). A
	// page can hold fewer devices even when more follow.
	PageSize int
	// ContinuationToken resumes a listing where an earlier page ended:
	// pass that page's ContinuationToken. "" (the default) starts at the
	// first device.
	ContinuationToken string
}

// DevicesPage is one page of NewListDevicesPager.
type DevicesPage struct {
	// Devices are the page's devices, built from their twins (see
	// NewListDevicesPager for the fields a twin does not carry).
	Devices []*Device
	// ContinuationToken names the next page; "" on the last page. It can
	// be saved and given to ListDevicesOptions.ContinuationToken to resume.
	ContinuationToken string
}

// NewListDevicesPager returns a pager over every device of the registry,
// however many there are. Each NextPage sends one query, "SELECT * FROM
// devices" (POST /devices/query), and returns one page; More reports
// whether another page follows. An invalid PageSize fails with
// ErrArgumentInvalid before anything is sent. Needs RegistryRead or
// ServiceConnect.
//
// The devices are built from their twins, which carry the device's id,
// ETag (the twin's deviceEtag), Status, StatusReason, StatusUpdatedTime,
// ConnectionState, LastActivityTime, CloudToDeviceMessageCount,
// Authentication.Type and X.509 thumbprints, Capabilities, DeviceScope and
// ParentScopes. Twins carry no keys: Authentication.SymmetricKey is empty,
// and GetDevice returns a device's keys. GenerationID and
// ConnectionStateUpdatedTime are not in twins either and are left zero.
// The ETag is the identity's, good for DeleteOptions.IfMatch and
// UpdateOptions.IfMatch; but to change a device, start from GetDevice, not
// from a listed Device: UpdateDevice with a listed SAS device would send
// empty keys, and the hub would generate new ones.
//
// Each page is a separate request: devices created or deleted between
// pages may be missed or listed.
//
//	pager := c.NewListDevicesPager(nil)
//	for pager.More() {
//		page, err := pager.NextPage(ctx)
//		if err != nil { ... }
//		for _, d := range page.Devices { ... }
//	}
func (c *Client) NewListDevicesPager(opts *ListDevicesOptions) *runtime.Pager[DevicesPage] {
	var o ListDevicesOptions
	if opts != nil {
		o = *opts
	}
	return runtime.NewPager(runtime.PagingHandler[DevicesPage]{
		More: func(p DevicesPage) bool { return p.ContinuationToken != "" },
		Fetcher: func(ctx context.Context, prev *DevicesPage) (DevicesPage, error) {
			token := o.ContinuationToken
			if prev != nil {
				token = prev.ContinuationToken
			}
			return c.listDevicesPage(ctx, o.PageSize, token)
		},
	})
}

// listDevicesPage fetches one page of devices.
func (c *Client) listDevicesPage(ctx context.Context, pageSize int, token string) (page DevicesPage, err error) {
	// The query's own span ("Client.Query") is not started under this one.
	ctx, end := c.startSpan(ctx, "Client.ListDevices")
	defer func() { end(err) }()
	if pageSize < 0 || pageSize > MaxQueryPageSize {
		err = argErr(fmt.Sprintf("ListDevices: page size %d is out of range: want 1 to %d, or 0 for the hub's default", pageSize, MaxQueryPageSize))
		return DevicesPage{}, err
	}
	qp, err := c.queryPage(ctx, "SELECT * FROM devices", pageSize, token)
	if err != nil {
		return DevicesPage{}, err
	}
	twins, err := qp.Twins()
	if err != nil {
		return DevicesPage{}, err
	}
	page = DevicesPage{Devices: make([]*Device, 0, len(twins)), ContinuationToken: qp.ContinuationToken}
	for _, tw := range twins {
		page.Devices = append(page.Devices, deviceFromTwin(tw))
	}
	return page, nil
}

// deviceFromTwin builds a device identity from the fields of its twin.
func deviceFromTwin(tw *Twin) *Device {
	return &Device{
		DeviceID:                  tw.DeviceID,
		ETag:                      tw.DeviceETag,
		Status:                    tw.Status,
		StatusReason:              tw.StatusReason,
		StatusUpdatedTime:         tw.StatusUpdatedTime,
		ConnectionState:           tw.ConnectionState,
		LastActivityTime:          tw.LastActivityTime,
		CloudToDeviceMessageCount: tw.CloudToDeviceMessageCount,
		Authentication: Authentication{
			Type:           tw.AuthenticationType,
			X509Thumbprint: tw.X509Thumbprint,
		},
		Capabilities: tw.Capabilities,
		DeviceScope:  tw.DeviceScope,
		ParentScopes: tw.ParentScopes,
	}
}
