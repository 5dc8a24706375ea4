// Package testkey makes random SAS keys for tests.
package testkey

import (
	"crypto/rand"
	"encoding/base64"
)

// New returns a random 32-byte key in base64, the form IoT Hub generates.
func New() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}
