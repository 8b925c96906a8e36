package poller

// The errors of a failed request: ErrorKind, which tells the caller what
// to do about it, and APIError, which carries it with what the server said.

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrorKind classifies a failed request to the API.
type ErrorKind int

// Error kinds. Every failed [Client.List] returns an *APIError of one of
// these kinds, except when the caller's context was cancelled.
const (
	// KindUnauthorized is HTTP 401 or 403: the token is wrong or lacks rights.
	KindUnauthorized ErrorKind = iota + 1
	// KindRateLimited is HTTP 429; RetryAfter holds the server's Retry-After.
	KindRateLimited
	// KindServer is HTTP 5xx.
	KindServer
	// KindEnvelope is HTTP 200 whose envelope has status other than
	// "success" or code other than 200; Code and Message come from the body.
	KindEnvelope
	// KindDecode is a body that is not the expected JSON: truncated, HTML,
	// or without data.
	KindDecode
	// KindTimeout is a request that ran out of time: the client's timeout or
	// the caller's context deadline.
	KindTimeout
	// KindNetwork is a failure to connect or to read the answer.
	KindNetwork
	// KindRequest is any other HTTP status, e.g. 400 or 404: the API rejects
	// the request itself.
	KindRequest
)

// String returns the kind's lower-case name, e.g. "rate_limited".
func (k ErrorKind) String() string {
	switch k {
	case KindUnauthorized:
		return "unauthorized"
	case KindRateLimited:
		return "rate_limited"
	case KindServer:
		return "server"
	case KindEnvelope:
		return "envelope"
	case KindDecode:
		return "decode"
	case KindTimeout:
		return "timeout"
	case KindNetwork:
		return "network"
	case KindRequest:
		return "request"
	}
	return "kind_" + strconv.Itoa(int(k))
}

// Transient reports whether a request that failed this way may succeed
// when repeated: server, timeout, network, rate-limit and decode failures.
// Unauthorized, envelope and request failures are permanent.
func (k ErrorKind) Transient() bool {
	switch k {
	case KindServer, KindTimeout, KindNetwork, KindRateLimited, KindDecode:
		return true
	}
	return false
}

// APIError is a failed request to GET /external/tasks. Its text reads like
// "incsapp: GET /external/tasks page 3: HTTP 503" and never contains the
// token, a header or the query string.
type APIError struct {
	Kind       ErrorKind
	Page       int           // page number requested
	StatusCode int           // HTTP status, 0 when no answer arrived
	Status     string        // envelope status, for KindEnvelope
	Code       int           // envelope code, when the body had one
	Message    string        // envelope message or a short reason, token removed
	RetryAfter time.Duration // the server's Retry-After, 0 when absent
	Timeout    time.Duration // the timeout that ran out, for KindTimeout
	Err        error         // underlying error, if any
}

// Error returns the error as a path: "incsapp: GET /external/tasks page 3: HTTP 503".
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "incsapp: GET %s page %d: ", TasksPath, e.Page)
	switch e.Kind {
	case KindEnvelope:
		fmt.Fprintf(&b, "envelope status %q code %d", e.Status, e.Code)
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	case KindDecode:
		b.WriteString("decode")
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
		if e.Err != nil {
			b.WriteString(": " + e.Err.Error())
		}
	case KindTimeout:
		b.WriteString("timeout")
		if e.Timeout > 0 {
			b.WriteString(" after " + e.Timeout.String())
		}
	case KindNetwork:
		b.WriteString("network")
		if e.Err != nil {
			b.WriteString(": " + e.Err.Error())
		}
	default:
		if e.StatusCode != 0 {
			fmt.Fprintf(&b, "HTTP %d", e.StatusCode)
			if e.Message != "" {
				b.WriteString(": ")
			}
		}
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after " + e.RetryAfter.String() + ")")
	}
	return b.String()
}

// Unwrap returns the underlying error, e.g. context.DeadlineExceeded.
func (e *APIError) Unwrap() error { return e.Err }

// Transient reports whether repeating the request may succeed; see
// [ErrorKind.Transient].
func (e *APIError) Transient() bool { return e.Kind.Transient() }
