package device

import "runtime"

// goid returns the calling goroutine's id, read from the first line of its
// stack trace ("goroutine 42 [running]:"). Close uses it to tell whether it
// runs in the client's status callback, whose end it must not wait for; Go
// offers no other way to know which goroutine is calling. The delivery
// goroutine reads its id once when it starts, Close once.
func goid() uint64 {
	var buf [32]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0
	}
	var id uint64
	for _, ch := range b[len(prefix):] {
		if ch < '0' || ch > '9' {
			break
		}
		id = id*10 + uint64(ch-'0')
	}
	return id
}
