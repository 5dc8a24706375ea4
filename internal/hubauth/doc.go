// Package hubauth is the hub's side of authentication: the checks the local
// hub (internal/hub) makes on what clients present, exactly as Azure IoT Hub
// makes them.
//
//   - SAS tokens: [ParseSAS] keeps what [auth.ParseSAS] parses plus the raw
//     signed text, and [SAS.Verify] checks expiry (with [MaxClockSkew]),
//     resource (segment by segment) and signature (primary, then secondary
//     key; constant-time compare), in the hub's order.
//   - Shared access policies: [Policy] with its [Rights], the five
//     [DefaultPolicyRights] of a new hub, and [Policy.Authorize].
//   - X.509: [CheckThumbprint] for self-signed identities, [CheckCASigned]
//     for CA-signed ones, and [CheckThumbprintSyntax] for registry input
//     (the service client validates thumbprints with it too).
//
// Clients never need these checks, so they are internal; the public
// package auth keeps what device and back-end programs use (connection
// strings, signing, token providers, X.509 credentials). Signing and
// verifying still share one token format: ParseSAS delegates to
// auth.ParseSAS, and a token auth.SignSAS makes verifies here.
//
// Errors wrap the sentinels of this package, or auth.ErrSASExpired and
// auth.ErrInvalidSAS; test them with errors.Is. Secrets (keys, signatures)
// never appear in String, GoString or %v output, nor in error messages.
package hubauth
