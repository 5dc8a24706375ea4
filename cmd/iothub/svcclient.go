package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"

	"github.com/iothub-go/iothub/service"
)

// newServiceClient is the service client of the commands that talk to a
// hub's service API: connStr is a policy connection string, caFile ("" for
// the system roots) a PEM file of CAs to trust. closeIdle releases the
// client's idle connections. Every error is the user's (exitUsage), and
// none shows the key.
func newServiceClient(connStr, caFile string) (c *service.Client, closeIdle func(), err error) {
	opts := &service.ClientOptions{}
	closeIdle = func() {}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("iothub: --ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("iothub: --ca-file %s holds no PEM certificate", caFile)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		closeIdle = tr.CloseIdleConnections
		opts.Transport = &http.Client{Transport: tr}
	}
	c, err = service.NewClientFromConnectionString(connStr, opts)
	if err != nil {
		closeIdle()
		return nil, nil, err
	}
	return c, closeIdle, nil
}
