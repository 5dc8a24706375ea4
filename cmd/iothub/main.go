// Command iothub is the command-line companion of the iothub SDK: a local
// IoT Hub, a simulated device, a method invoker and a benchmark.
//
//	iothub hub [flags]    run a local, protocol-faithful IoT Hub
//	iothub device [flags] run a simulated device answering every method
//	iothub invoke [flags] invoke a direct method and print the answer
//	iothub query [flags] 'SELECT ...'  run a query, print the items as JSON lines
//	iothub send [flags]   send a cloud-to-device message, print its feedback
//	iothub job ...        schedule and track jobs (methods or twin updates on many devices)
//	iothub device-identity ...  create, show, list and delete devices (as az iot hub device-identity)
//	iothub module-identity ...  the same for modules (as az iot hub module-identity)
//	iothub bench [flags]  measure latency, throughput and scale (see BENCHMARKS.md)
//	iothub version        print the SDK and Go versions (also: iothub --version)
//
// From a clone of the repository, a hub, a device and a call in three
// terminals:
//
//	go run ./cmd/iothub hub --ca-file ca.pem --device dev1   # prints IOTHUB_…_CONNECTION_STRING=… lines
//	IOTHUB_DEVICE_CONNECTION_STRING='…' go run ./cmd/iothub device --ca-file ca.pem
//	IOTHUB_SERVICE_CONNECTION_STRING='…' go run ./cmd/iothub invoke --ca-file ca.pem --device dev1 --method reboot
//
// Run "iothub help" for more examples and "iothub COMMAND -h" for a
// command's flags.
//
// Every command that prints results takes --output text (the default:
// lines for people) or --output json (one JSON document per result, one
// per line); each command's -h shows the documents. Exit status: 0 on
// success, 1 on failure, 2 on bad usage (for "iothub query", also a query
// the hub refused); "iothub invoke" also exits 3 when the device answered
// with a status outside 200-299 and 4 when the device was not online or
// did not answer in time.
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
		return exitUsage
	}
	switch args[0] {
	case "hub":
		return runHub(args[1:], stdout, stderr)
	case "device":
		return runDevice(args[1:], stdout, stderr)
	case "invoke":
		return runInvoke(args[1:], stdout, stderr)
	case "query":
		return runQuery(args[1:], stdout, stderr)
	case "bench":
		return runBench(args[1:], stdout, stderr)
	case "job":
		return runJob(args[1:], stdout, stderr)
	case "send":
		return runSend(args[1:], stdout, stderr)
	case "device-identity":
		return runDeviceIdentity(args[1:], stdout, stderr)
	case "module-identity":
		return runModuleIdentity(args[1:], stdout, stderr)
	case "version":
		return runVersion(args[1:], stdout, stderr)
	case "-version", "--version":
		if len(args) > 1 {
			fmt.Fprintf(stderr, "iothub: %s takes no arguments (use \"iothub version --output json\" for JSON)\n", args[0])
			return exitUsage
		}
		return runVersion(nil, stdout, stderr)
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "iothub: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: iothub <command> [flags]

The command-line companion of the iothub SDK (Azure IoT Hub direct methods).

commands:
  hub     run a local, protocol-faithful IoT Hub on 127.0.0.1 (MQTT 8883,
          HTTPS and WebSocket 443, AMQP 5671) and print connection strings
  device  run a simulated device that answers every direct method
  invoke  invoke a direct method on a device or module and print its answer
  query   run an IoT Hub query and print every item, one JSON line each
  send    send a cloud-to-device message to a device and wait for its
          feedback
  job     schedule, show, list, wait for and cancel jobs: a method or a
          twin update on every device a query condition selects
  device-identity
          create, show, list and delete devices and print their connection
          strings, with the flags of "az iot hub device-identity"
          (--output json, the default, or table)
  module-identity
          the same for a device's modules ("az iot hub module-identity")
  bench   measure latency, throughput and scale (see BENCHMARKS.md)
  version print the SDK and Go versions (also: iothub --version)

Run "iothub <command> -h" for a command's flags. Every command that prints
results takes --output text (the default) or --output json: one JSON
document per result, one per line.

exit status:
  0  success (hub and device: stopped by SIGINT or SIGTERM)
  1  failure: the hub, the network or the run failed
  2  bad usage: flags, arguments, files or connection string refused
     (query: also a query the hub refused)
  3  invoke only: the device answered with a status outside 200-299
  4  invoke only: the device was not online, or did not answer in time

examples:
  # a local hub with one device; it prints both connection strings
  # (binding 443 needs root: add --https-addr 127.0.0.1:8443 otherwise)
  iothub hub --ca-file ca.pem --device dev1

  # a device answering every method, over MQTT (or --transport mqtt-ws)
  export IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=dev1;SharedAccessKey=…'
  iothub device --ca-file ca.pem

  # invoke "reboot" on it; prints the device's status and payload
  # (--output json: {"status":200,"payload":…})
  export IOTHUB_SERVICE_CONNECTION_STRING='HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=…'
  iothub invoke --ca-file ca.pem --device dev1 --method reboot --payload '{"delaySeconds":5}'

  # twins of one site, one JSON document per line, all pages
  iothub query --ca-file ca.pem "SELECT * FROM devices WHERE tags.site = 'berlin'"

  # register a device, then print its connection string
  iothub device-identity create --ca-file ca.pem -d dev2
  iothub device-identity connection-string --ca-file ca.pem -d dev2

  # against Azure IoT Hub: the hub's connection strings, no --ca-file
  iothub invoke --device myDevice --method reboot

  # benchmarks of every transport, with a table on stdout
  iothub bench
`)
}
