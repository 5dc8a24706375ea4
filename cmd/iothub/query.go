package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/iothub-go/iothub/service"
)

// queryConfig is the parsed command line of "iothub query".
type queryConfig struct {
	connStr      string
	sql          string
	pageSize     int
	top          int // 0: every item
	continuation string
	caFile       string
	output       output
}

func parseQueryFlags(args []string, stderr io.Writer) (*queryConfig, error) {
	var c queryConfig
	fs := flag.NewFlagSet("iothub query", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: iothub query [flags] 'SELECT ...'

Runs an IoT Hub query (POST /devices/query) and prints every item of every
page on stdout, one compact JSON document per line (JSON lines), following
the continuation tokens until the last page:

  iothub query "SELECT * FROM devices WHERE tags.site = 'berlin'"
  {"deviceId":"dev1","etag":"…","tags":{"site":"berlin"},…}
  iothub query "SELECT deviceId, tags.site AS site FROM devices"
  {"deviceId":"dev1","site":"berlin"}
  iothub query "SELECT tags.site, COUNT() AS n FROM devices GROUP BY tags.site"
  {"site":"berlin","n":2}

Flags go before the query. --output text (the default) and --output json
print the items the same way; with --output json a failure at the hub or
on the network is also one JSON document on stdout (usage errors print
only to stderr):

  {"error":{"code":400004,"errorCode":"ArgumentInvalid","message":"iothub: 400004 ArgumentInvalid: …","trackingId":"…"}}

When a page fails after earlier pages were printed, stderr names the
token that resumes the query at the failed page (--continuation).

`+exitCodesHelp+`     (2 also when the hub refuses the query: 400004 ArgumentInvalid, with the
     hub's message on stderr)

flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.connStr, "connection-string", "",
		"hub policy connection string with ServiceConnect or RegistryRead (default $IOTHUB_SERVICE_CONNECTION_STRING)")
	fs.IntVar(&c.pageSize, "page-size", 0, fmt.Sprintf("items per page (x-ms-max-item-count), 1 to %d (default: the hub's, 100 on the local hub)", service.MaxQueryPageSize))
	fs.IntVar(&c.top, "top", 0, "print at most `N` items, then stop asking for pages (default: every item; the query's own TOP also works)")
	fs.StringVar(&c.continuation, "continuation", "", "resume the same query at the page this `token` names (a continuation token printed by an earlier run)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM file of CA certificates to trust (e.g. a local hub's --ca-file) instead of the system roots")
	outputFlag(fs, &c.output)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	fromEnv(&c.connStr, "IOTHUB_SERVICE_CONNECTION_STRING")
	switch {
	case fs.NArg() == 0:
		return nil, errors.New("iothub: the query is required: iothub query [flags] 'SELECT * FROM devices'")
	case fs.NArg() > 1:
		return nil, fmt.Errorf("iothub: unexpected argument %q (quote the query as one argument; flags go before it)", fs.Arg(1))
	case c.connStr == "":
		return nil, errors.New("iothub: --connection-string or $IOTHUB_SERVICE_CONNECTION_STRING is required")
	case c.pageSize < 0 || c.pageSize > service.MaxQueryPageSize:
		return nil, fmt.Errorf("iothub: --page-size %d is out of range: want 1 to %d", c.pageSize, service.MaxQueryPageSize)
	case c.top < 0:
		return nil, fmt.Errorf("iothub: --top %d is negative", c.top)
	}
	c.sql = fs.Arg(0)
	return &c, nil
}

// runQuery runs "iothub query".
func runQuery(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseQueryFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runQueryPages(ctx, cfg, stdout, stderr)
}

func runQueryPages(ctx context.Context, cfg *queryConfig, stdout, stderr io.Writer) int {
	c, closeIdle, err := newServiceClient(cfg.connStr, cfg.caFile) // (shared with invoke and job)
	if err != nil {
		fmt.Fprintln(stderr, err) // never shows the key
		return exitUsage
	}
	defer closeIdle()
	pager := c.NewQueryPager(cfg.sql, &service.QueryOptions{PageSize: cfg.pageSize, ContinuationToken: cfg.continuation})
	w := bufio.NewWriter(stdout)
	printed := 0
	token := cfg.continuation // the token of the page being fetched
	var line bytes.Buffer
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			if ferr := w.Flush(); ferr != nil {
				fmt.Fprintf(stderr, "iothub: %v\n", ferr)
			}
			return queryFailed(err, printed, token, cfg.output, stdout, stderr)
		}
		for _, it := range page.Items {
			if cfg.top > 0 && printed == cfg.top {
				break
			}
			line.Reset()
			if json.Compact(&line, it) != nil {
				line.Write(bytes.TrimSpace(it)) // the decoder accepted it: valid JSON
			}
			line.WriteByte('\n')
			if _, err := w.Write(line.Bytes()); err != nil {
				fmt.Fprintf(stderr, "iothub: %v\n", err)
				return exitFailure
			}
			printed++
		}
		if err := w.Flush(); err != nil {
			fmt.Fprintf(stderr, "iothub: %v\n", err)
			return exitFailure
		}
		token = page.ContinuationToken
		if cfg.top > 0 && printed == cfg.top {
			break
		}
	}
	return exitOK
}

// queryFailed reports a failed page and returns the exit status: exitUsage
// for a query refused by the hub (400) or before sending, exitFailure
// otherwise.
func queryFailed(err error, printed int, token string, out output, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, err)
	var re *service.ResponseError
	isRE := errors.As(err, &re)
	if isRE && re.TrackingID != "" {
		fmt.Fprintf(stderr, "iothub: tracking ID %s\n", re.TrackingID)
	}
	if printed > 0 && token != "" {
		fmt.Fprintf(stderr, "iothub: %d items printed; resume with --continuation %s\n", printed, token)
	}
	if errors.Is(err, service.ErrArgumentInvalid) && !isRE {
		return exitUsage // refused before sending
	}
	if out == outputJSON {
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
	if errors.Is(err, service.ErrArgumentInvalid) {
		return exitUsage // the hub refused the query or the token
	}
	return exitFailure
}
