// Package auth holds the credentials that IoT Hub devices, back-end services and
// the local hub share: connection strings, shared access signature (SAS) tokens,
// token providers with renewal, hub access policies and X.509 certificates.
//
// One implementation serves both sides. Clients use [SignSAS] (through a
// [TokenProvider]) to build tokens; the local hub uses [ParseSAS] and
// [SAS.Verify] to check them exactly as Azure IoT Hub does: the raw "sr" is
// signed, the primary and then the secondary key are tried, five minutes of
// clock skew are allowed, and a token authorizes its resource and everything
// below it, segment by segment.
//
// Secrets never appear in String, GoString or %v output of any type in this
// package, nor in its error messages.
//
// The package uses only the standard library.
package auth
