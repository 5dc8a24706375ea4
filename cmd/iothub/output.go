package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/iothub-go/iothub"
)

// Exit statuses shared by every command. "iothub invoke" adds
// exitDeviceStatus and exitDeviceUnreachable.
const (
	exitOK      = 0 // success, or stopped by SIGINT/SIGTERM
	exitFailure = 1 // the hub, the network or the measured run failed
	exitUsage   = 2 // bad flags, arguments, files or connection string
)

// exitCodesHelp is the part of every command's -h that lists the common
// exit statuses.
const exitCodesHelp = `exit status:
  0  success
  1  failure: the hub, the network or the run failed
  2  bad usage: flags, arguments, files or connection string refused
`

// output is the value of --output: how a command prints its results on
// stdout.
type output string

const (
	outputText output = "text" // lines for people (the default)
	outputJSON output = "json" // one JSON document per result, one per line
)

// outputFlag registers --output on fs.
func outputFlag(fs *flag.FlagSet, p *output) {
	*p = outputText
	fs.Func("output", "`format` of the results on stdout: text (the default), or json: one JSON document per result, one per line",
		func(v string) error {
			switch output(v) {
			case outputText, outputJSON:
				*p = output(v)
				return nil
			}
			return errors.New("want text or json")
		})
}

// writeJSON writes v as one JSON document on one line, with &, < and >
// as they are.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// usageError marks an error as the user's (a file, a connection string or
// a flag combination refused before anything ran): it exits with
// exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCode is exitUsage for a usageError and exitFailure otherwise.
func exitCode(err error) int {
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	return exitFailure
}

// versionInfo is what "iothub version --output json" prints.
type versionInfo struct {
	Version   string `json:"version"`   // iothub.Version
	GoVersion string `json:"goVersion"` // runtime.Version()
	Platform  string `json:"platform"`  // GOOS/GOARCH
}

func currentVersion() versionInfo {
	return versionInfo{Version: iothub.Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}

// runVersion runs "iothub version" (and "iothub --version", with no
// arguments).
func runVersion(args []string, stdout, stderr io.Writer) int {
	var out output
	fs := flag.NewFlagSet("iothub version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: iothub version [--output text|json]
       iothub --version

Prints the SDK version (iothub.Version) and the Go version and platform
the command was built with:

  iothub 0.1.0 (go1.26.0 linux/amd64)

or, with --output json, one JSON document:

  {"version":"0.1.0","goVersion":"go1.26.0","platform":"linux/amd64"}

`+exitCodesHelp+`
flags:
`)
		fs.PrintDefaults()
	}
	outputFlag(fs, &out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "iothub: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	v := currentVersion()
	var err error
	if out == outputJSON {
		err = writeJSON(stdout, v)
	} else {
		_, err = fmt.Fprintf(stdout, "iothub %s (%s %s)\n", v.Version, v.GoVersion, v.Platform)
	}
	if err != nil {
		fmt.Fprintf(stderr, "iothub: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// fromEnv sets *p from the environment variable name when the flag left it
// empty. The variable is read after the flags are parsed, never as a flag's
// default, so that -h (which prints defaults) shows no secret.
func fromEnv(p *string, name string) {
	if *p == "" {
		*p = os.Getenv(name)
	}
}
