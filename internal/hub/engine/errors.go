package engine

import (
	"fmt"
	"time"
)

// Error is a hub failure as IoT Hub reports it: an HTTP status, a six-digit
// error code and the code's name (sent in the iothub-errorcode header).
type Error struct {
	Status  int    // HTTP status
	Code    int    // e.g. 404103
	Name    string // e.g. "DeviceNotOnline"
	Message string // human-readable; never contains secrets
	// RetryAfter, when positive, is sent as Retry-After (whole seconds,
	// rounded up) and Retry-After-Ms on the HTTP answer. Only injected
	// faults set it (FailServiceRequestsRetryAfter).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("iothub: %d %s: %s", e.Code, e.Name, e.Message)
}

// The error codes the local hub emits, with IoT Hub's numbers and names.
const (
	CodeInvalidProtocolVersion       = 400001
	CodeArgumentInvalid              = 400004
	CodeConnectionForcefullyClosed   = 400027
	CodeInvalidDeviceScope           = 400028
	CodeArgumentNull                 = 400005
	CodeIotHubFormatError            = 400006
	CodeUnauthorized                 = 401002
	CodeIotHubQuotaExceeded          = 403002
	CodeDeviceNotFound               = 404001
	CodeModuleNotFound               = 404010
	CodeDeviceNotOnline              = 404103
	CodeDeviceAlreadyExists          = 409001
	CodeLinkCreationConflict         = 409002
	CodeModuleAlreadyExistsOnDevice  = 409301
	CodePreconditionFailed           = 412001
	CodeMessageTooLarge              = 413001
	CodeThrottling                   = 429001
	CodeThrottleBacklogLimit         = 429002
	CodeServerError                  = 500001
	CodeServiceUnavailable           = 503001
	CodeInvalidResponseWhileProxying = 502001
	CodeGatewayTimeout               = 504101
)

var codeNames = map[int]string{
	CodeInvalidProtocolVersion:       "InvalidProtocolVersion",
	CodeArgumentInvalid:              "ArgumentInvalid",
	CodeConnectionForcefullyClosed:   "ConnectionForcefullyClosedOnNewConnection",
	CodeArgumentNull:                 "ArgumentNull",
	CodeInvalidDeviceScope:           "InvalidDeviceScope",
	CodeIotHubFormatError:            "IotHubFormatError",
	CodeUnauthorized:                 "IotHubUnauthorizedAccess",
	CodeIotHubQuotaExceeded:          "IotHubQuotaExceeded",
	CodeDeviceNotFound:               "DeviceNotFound",
	CodeModuleNotFound:               "ModuleNotFound",
	CodeDeviceNotOnline:              "DeviceNotOnline",
	CodeDeviceAlreadyExists:          "DeviceAlreadyExists",
	CodeLinkCreationConflict:         "LinkCreationConflict",
	CodeModuleAlreadyExistsOnDevice:  "ModuleAlreadyExistsOnDevice",
	CodePreconditionFailed:           "PreconditionFailed",
	CodeMessageTooLarge:              "MessageTooLarge",
	CodeThrottling:                   "ThrottlingException",
	CodeThrottleBacklogLimit:         "ThrottleBacklogLimitExceeded",
	CodeServerError:                  "ServerError",
	CodeServiceUnavailable:           "ServiceUnavailable",
	CodeInvalidResponseWhileProxying: "InvalidResponseWhileProxying",
	CodeGatewayTimeout:               "GatewayTimeout",

	CodeDeviceModelMaxPropertiesExceeded: "DeviceModelMaxPropertiesExceeded", // twins.go

	CodeJobNotFound:                 "JobNotFound", // jobs.go
	CodeJobAlreadyExists:            "JobAlreadyExists",
	CodeThrottlingMaxActiveJobCount: "ThrottlingMaxActiveJobCountExceeded",

	CodeDeviceMaximumQueueDepthExceeded: "DeviceMaximumQueueDepthExceeded", // c2d.go
	CodeDeviceMessageLockLost:           "DeviceMessageLockLost",
}

// NewError returns the error for code; the HTTP status is the code's first
// three digits.
func NewError(code int, format string, args ...any) *Error {
	return &Error{Status: code / 1000, Code: code, Name: codeNames[code], Message: fmt.Sprintf(format, args...)}
}

// CodeName returns IoT Hub's name for code ("" when unknown).
func CodeName(code int) string { return codeNames[code] }
