// Package auth holds the credentials that IoT Hub device and back-end
// programs use:
//
//   - connection strings: [ParseDeviceConnectionString] (devices and
//     modules) and [ParseServiceConnectionString] (hub policies), giving a
//     [ConnectionString] and the [Identity] it names;
//   - shared access signature (SAS) tokens: [SignSAS] over a
//     [DeviceResource], [ModuleResource] or hub host, and [ParseSAS] to
//     inspect a token's resource, policy and expiry;
//   - token providers: [KeyTokenProvider] mints and renews tokens from a key,
//     [StaticToken] wraps a fixed token, both behind [TokenProvider];
//   - X.509 credentials: [LoadX509Credential], [ParseX509Credential] and
//     [NewX509Credential], and [ComputeThumbprints] for registering a
//     self-signed device;
//   - [CheckID], the registry's rule for device and module ids.
//
// Tokens follow IoT Hub's format exactly: the encoded resource, a newline
// and the expiry are signed with HMAC-SHA256, and an optional skn names the
// hub policy.
//
// Verifying what clients present (token signatures, expiry with clock skew,
// policy rights, certificate thumbprints and CA chains) is the hub's side
// and is not part of this package: the module's local hub does it in an
// internal package, on the same token format.
//
// CheckID is public because ids come from the user (command lines,
// provisioning tools): it is the rule that ParseDeviceConnectionString and
// the device and service clients apply, so a program can check an id before
// it calls them.
//
// Secrets never appear in String, GoString or %v output of any type in this
// package, nor in its error messages. Errors wrap the package's sentinels
// ([ErrInvalidConnectionString], [ErrInvalidSAS], [ErrSASExpired]); use
// errors.Is.
//
// The package uses only the standard library.
package auth
