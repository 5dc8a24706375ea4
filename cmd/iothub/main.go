// Command iothub is the command-line companion of the iothub SDK.
//
//	iothub hub [flags]    run a local, protocol-faithful IoT Hub
//	iothub device [flags] run a simulated device answering every method
//	iothub invoke [flags] invoke a direct method and print the answer
//
// Run "iothub hub -h" for the flags.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "hub":
		return runHub(args[1:], stdout, stderr)
	case "device":
		return runDevice(args[1:], stdout, stderr)
	case "invoke":
		return runInvoke(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "iothub: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: iothub <command> [flags]

commands:
  hub    run a local IoT Hub (MQTT, MQTT over WebSocket, HTTPS service API)
  device run a simulated device that answers every direct method
  invoke invoke a direct method on a device or module and print its answer
`)
}
