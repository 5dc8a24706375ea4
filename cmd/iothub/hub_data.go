package main

// iothub hub --data DIR: what the hub keeps on disk besides the engine's
// store (internal/hub/store): its CA, so that the CA file clients trust
// and the certificates the hub serves stay valid across restarts, and the
// device CAs it was told to trust.

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/iothub-go/iothub/internal/pki"
)

// Files of the data directory, next to store.FileName.
const (
	dataCACert    = "ca-cert.pem"
	dataCAKey     = "ca-key.pem"
	dataDeviceCAs = "device-cas.pem"
)

// dataCA returns the hub's CA kept in dir: the one loaded with
// --load-ca-cert/--load-ca-key (ca, then written to dir), else the one dir
// holds, else a new one (written to dir).
func dataCA(dir string, ca *pki.CA) (*pki.CA, error) {
	certFile, keyFile := filepath.Join(dir, dataCACert), filepath.Join(dir, dataCAKey)
	if ca == nil {
		certPEM, err := os.ReadFile(certFile)
		if err == nil {
			keyPEM, err := os.ReadFile(keyFile)
			if err != nil {
				return nil, fmt.Errorf("iothub: --data: %w", err)
			}
			ca, err := pki.LoadCA(certPEM, keyPEM)
			if err != nil {
				return nil, fmt.Errorf("iothub: --data: %s: %w", certFile, err)
			}
			return ca, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("iothub: --data: %w", err)
		}
		if ca, err = pki.NewCA("iothub local hub CA"); err != nil {
			return nil, err
		}
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	// The key first: a cert without its key would stop the next start.
	if err := writeFileSync(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileSync(certFile, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// dataDeviceCAFiles adds the --device-ca files' certificates to the set
// kept in dir and returns the files to load: the kept set, when there is
// one.
func dataDeviceCAFiles(dir string, files []string) ([]string, error) {
	// Check before keeping: a bad file must not poison the directory.
	if len(files) > 0 {
		if _, err := loadDeviceCAs(files, io.Discard); err != nil {
			return nil, err
		}
	}
	kept := filepath.Join(dir, dataDeviceCAs)
	old, err := os.ReadFile(kept)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("iothub: --data: %w", err)
	}
	all := append([]byte(nil), old...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("iothub: --device-ca: %w", err)
		}
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" || hasCert(all, blk.Bytes) {
				continue
			}
			all = append(all, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: blk.Bytes})...)
		}
	}
	if len(all) == 0 {
		return files, nil
	}
	if !bytes.Equal(all, old) {
		if err := writeFileSync(kept, all, 0o644); err != nil {
			return nil, err
		}
	}
	return []string{kept}, nil
}

func hasCert(pemBytes, der []byte) bool {
	for rest := pemBytes; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return false
		}
		if bytes.Equal(blk.Bytes, der) {
			return true
		}
	}
}

// writeFileSync writes a file durably: a temporary file, fsync'd, renamed
// over the old one, and the directory fsync'd.
func writeFileSync(name string, b []byte, perm os.FileMode) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("iothub: --data: %w", err)
	}
	_, err = f.Write(b)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("iothub: --data: %w", err)
	}
	if d, err := os.Open(filepath.Dir(name)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
