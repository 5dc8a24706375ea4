package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// Queries: IoT Hub's SQL-like query language over device twins
// ("FROM devices"), module twins ("FROM devices.modules") and the
// devices' jobs ("FROM devices.jobs"), read a page at a time.

// QueryItemType says what the items of a query page are (the hub's
// x-ms-item-type header).
type QueryItemType string

// The item types of IoT Hub's query answers.
const (
	// QueryItemTypeTwin: whole device or module twins (SELECT * FROM
	// devices, SELECT * FROM devices.modules); QueryPage.Twins decodes them.
	QueryItemTypeTwin QueryItemType = "twin"
	// QueryItemTypeDeviceJob: a device's part in a job (SELECT * FROM
	// devices.jobs).
	QueryItemTypeDeviceJob QueryItemType = "deviceJob"
	// QueryItemTypeJobResponse: jobs, as the jobs API lists them.
	QueryItemTypeJobResponse QueryItemType = "jobResponse"
	// QueryItemTypeRaw: any other JSON, such as projections (SELECT
	// deviceId, tags.site FROM devices) and aggregates (SELECT COUNT() ...
	// GROUP BY ...).
	QueryItemTypeRaw QueryItemType = "raw"
)

// Query paging limits. IoT Hub's query guide allows pages of up to 1000
// items.
const (
	// MaxQueryPageSize is the largest QueryOptions.PageSize.
	MaxQueryPageSize = 1000
	// maxQueryBody bounds the body of a query page: up to 1000 twins, each
	// a few KB in practice and the hub's page capped in bytes. [inf]
	maxQueryBody = 32 << 20
)

// QueryOptions are the optional parameters of NewQueryPager. A nil
// *QueryOptions gives the defaults.
type QueryOptions struct {
	// PageSize is the most items a page holds (x-ms-max-item-count), 1 to
	// MaxQueryPageSize. 0 (the default) leaves it to the hub (100 items on
	// the local hub). A page can hold fewer items even when more follow.
	PageSize int
	// ContinuationToken resumes a query where an earlier page ended: pass
	// that page's ContinuationToken (with the same query text). "" (the
	// default) starts at the first item.
	ContinuationToken string
}

// QueryPage is one page of a query's results.
type QueryPage struct {
	// Items are the page's items as the hub sent them, one JSON value each.
	Items []json.RawMessage
	// ItemType says what the items are; QueryItemTypeTwin items can be
	// decoded with Twins.
	ItemType QueryItemType
	// ContinuationToken names the next page; "" on the last page. It can
	// be saved and given to QueryOptions.ContinuationToken to resume.
	ContinuationToken string
}

// Twins decodes the page's items as twins (QueryItemTypeTwin pages). An
// item that is not a JSON object fails with an error matching
// ErrMalformedResponse; the fields a projection left out are zero.
func (p QueryPage) Twins() ([]*Twin, error) {
	out := make([]*Twin, 0, len(p.Items))
	for i, raw := range p.Items {
		var tw Twin
		if err := json.Unmarshal(raw, &tw); err != nil {
			return nil, fmt.Errorf("%w: query item %d is not a twin: %w", ErrMalformedResponse, i, err)
		}
		out = append(out, &tw)
	}
	return out, nil
}

// NewQueryPager returns a pager over the results of an IoT Hub query, such
// as "SELECT * FROM devices WHERE tags.site = 'berlin'". Each NextPage
// sends one request (POST /devices/query) and returns one page; More
// reports whether another page follows. A query the hub refuses fails
// with ErrArgumentInvalid and the hub's message; an empty query or an
// invalid PageSize fails the same way before anything is sent. Needs
// RegistryRead or ServiceConnect.
//
// Each page is a separate request: results may reflect changes made
// between pages.
//
//	pager := c.NewQueryPager("SELECT * FROM devices", nil)
//	for pager.More() {
//		page, err := pager.NextPage(ctx)
//		if err != nil { ... }
//		twins, err := page.Twins()
//		...
//	}
func (c *Client) NewQueryPager(query string, opts *QueryOptions) *runtime.Pager[QueryPage] {
	var o QueryOptions
	if opts != nil {
		o = *opts
	}
	return runtime.NewPager(runtime.PagingHandler[QueryPage]{
		More: func(p QueryPage) bool { return p.ContinuationToken != "" },
		Fetcher: func(ctx context.Context, prev *QueryPage) (QueryPage, error) {
			token := o.ContinuationToken // the first page
			if prev != nil {
				token = prev.ContinuationToken
			}
			return c.queryPage(ctx, query, o.PageSize, token)
		},
	})
}

// queryPage fetches one page of a query.
func (c *Client) queryPage(ctx context.Context, query string, pageSize int, token string) (page QueryPage, err error) {
	ctx, end := c.startSpan(ctx, "Client.Query")
	defer func() { end(err) }()
	if query == "" {
		return QueryPage{}, argErr("Query: the query is empty")
	}
	if pageSize < 0 || pageSize > MaxQueryPageSize {
		return QueryPage{}, argErr(fmt.Sprintf("Query: page size %d is out of range: want 1 to %d, or 0 for the hub's default", pageSize, MaxQueryPageSize))
	}
	body, err := json.Marshal(struct {
		Query string `json:"query"`
	}{query})
	if err != nil {
		return QueryPage{}, fmt.Errorf("iothub: encoding the query: %w", err)
	}
	req, err := c.newRequest(withBodyLimit(ctx, maxQueryBody), http.MethodPost, "/devices/query", "")
	if err != nil {
		return QueryPage{}, err
	}
	if pageSize > 0 {
		req.Raw().Header.Set("x-ms-max-item-count", strconv.Itoa(pageSize))
	}
	if token != "" {
		req.Raw().Header.Set("x-ms-continuation", token)
	}
	if err = req.SetBody(memBody{bytes.NewReader(body)}, "application/json; charset=utf-8"); err != nil {
		return QueryPage{}, fmt.Errorf("iothub: building request: %w", err)
	}
	resp, err := c.do(ctx, req, http.StatusOK)
	if err != nil {
		return QueryPage{}, wrapTransport(err)
	}
	var items []json.RawMessage
	if err = decodeBody(resp, &items); err != nil {
		return QueryPage{}, err
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	return QueryPage{
		Items:             items,
		ItemType:          QueryItemType(resp.Header.Get("x-ms-item-type")),
		ContinuationToken: resp.Header.Get("x-ms-continuation"),
	}, nil
}
