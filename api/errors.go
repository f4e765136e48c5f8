package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/flotilla/flotilla/meta"
)

// ErrorCode is an entry of the OCI error code registry with its HTTP status.
type ErrorCode struct {
	Code    string
	Message string
	Status  int
}

// The error codes this API answers with (distribution-spec, "Error Codes",
// plus the status Distribution uses for each).
var (
	ErrCodeBlobUnknown         = ErrorCode{"BLOB_UNKNOWN", "blob unknown to registry", http.StatusNotFound}
	ErrCodeBlobUploadInvalid   = ErrorCode{"BLOB_UPLOAD_INVALID", "blob upload invalid", http.StatusBadRequest}
	ErrCodeBlobUploadUnknown   = ErrorCode{"BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", http.StatusNotFound}
	ErrCodeDigestInvalid       = ErrorCode{"DIGEST_INVALID", "provided digest did not match uploaded content", http.StatusBadRequest}
	ErrCodeManifestBlobUnknown = ErrorCode{"MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", http.StatusBadRequest}
	ErrCodeManifestInvalid     = ErrorCode{"MANIFEST_INVALID", "manifest invalid", http.StatusBadRequest}
	ErrCodeManifestUnknown     = ErrorCode{"MANIFEST_UNKNOWN", "manifest unknown to registry", http.StatusNotFound}
	ErrCodeNameInvalid         = ErrorCode{"NAME_INVALID", "invalid repository name", http.StatusBadRequest}
	ErrCodeNameUnknown         = ErrorCode{"NAME_UNKNOWN", "repository name not known to registry", http.StatusNotFound}
	ErrCodeSizeInvalid         = ErrorCode{"SIZE_INVALID", "provided length did not match content length", http.StatusBadRequest}
	ErrCodeManifestTooBig      = ErrorCode{"SIZE_INVALID", "manifest exceeds the size limit", http.StatusRequestEntityTooLarge}
	ErrCodeUnauthorized        = ErrorCode{"UNAUTHORIZED", "authentication required", http.StatusUnauthorized}
	ErrCodeDenied              = ErrorCode{"DENIED", "requested access to the resource is denied", http.StatusForbidden}
	ErrCodeUnsupported         = ErrorCode{"UNSUPPORTED", "the operation is unsupported", http.StatusMethodNotAllowed}
	ErrCodeRangeInvalid        = ErrorCode{"RANGE_INVALID", "invalid content range", http.StatusRequestedRangeNotSatisfiable}
	ErrCodeTagInvalid          = ErrorCode{"TAG_INVALID", "invalid tag", http.StatusBadRequest}
	ErrCodeUnavailable         = ErrorCode{"UNAVAILABLE", "service unavailable, retry", http.StatusServiceUnavailable}
	ErrCodeTooManyRequests     = ErrorCode{"TOOMANYREQUESTS", "too many requests", http.StatusTooManyRequests}
	ErrCodeInternal            = ErrorCode{"INTERNAL", "internal error", http.StatusInternalServerError}
	ErrCodeTagConflict         = ErrorCode{"TAG_CONFLICT", "the tag does not point where the request's precondition says", http.StatusPreconditionFailed}
	ErrCodeIndexInvalid        = ErrorCode{"INDEX_INVALID", "the requested Flotilla-Index is beyond the cluster's log", http.StatusBadRequest}
)

var (
	// ErrUnavailable is what a Registry returns (wrapped) when it cannot serve
	// now but a retry may succeed: no leader, store shutting down, storage down.
	ErrUnavailable = errors.New("unavailable")
	// ErrOutcomeUnknown is what a Registry returns (wrapped) when a write was
	// submitted but its outcome is unknown. The client may retry: every
	// command is idempotent.
	ErrOutcomeUnknown = errors.New("write outcome unknown")
	// ErrIndexAhead is what Fence returns (wrapped) when a request asks for
	// an index the cluster has not committed.
	ErrIndexAhead = errors.New("requested index is beyond the log")
)

// Error is an API error: a code, and detail for the client.
type Error struct {
	Code   ErrorCode
	Detail any
	// Cause is logged, never sent.
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %v", e.Code.Code, e.Cause)
	}
	return e.Code.Code
}

func (e *Error) Unwrap() error { return e.Cause }

func apiErr(code ErrorCode, detail any) *Error { return &Error{Code: code, Detail: detail} }

// fromDomain maps errors from the Registry and BlobStore to API errors.
func fromDomain(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	var ce *meta.CodeError
	if errors.As(err, &ce) {
		detail := any(nil)
		if ce.Detail != "" {
			detail = ce.Detail
		}
		switch ce.Code {
		case meta.CodeNameUnknown:
			return &Error{Code: ErrCodeNameUnknown, Detail: detail, Cause: err}
		case meta.CodeManifestUnknown:
			return &Error{Code: ErrCodeManifestUnknown, Detail: detail, Cause: err}
		case meta.CodeManifestBlobUnknown:
			return &Error{Code: ErrCodeManifestBlobUnknown, Detail: detail, Cause: err}
		case meta.CodeBlobUnknown:
			return &Error{Code: ErrCodeBlobUnknown, Detail: detail, Cause: err}
		case meta.CodeBlobUploadUnknown:
			return &Error{Code: ErrCodeBlobUploadUnknown, Detail: detail, Cause: err}
		case meta.CodeRangeInvalid:
			return &Error{Code: ErrCodeRangeInvalid, Detail: detail, Cause: err}
		case meta.CodeDenied:
			return &Error{Code: ErrCodeDenied, Detail: detail, Cause: err}
		case meta.CodeTagConflict:
			return &Error{Code: ErrCodeTagConflict, Detail: detail, Cause: err}
		}
	}
	if errors.Is(err, ErrIndexAhead) {
		return &Error{Code: ErrCodeIndexInvalid, Detail: err.Error(), Cause: err}
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOutcomeUnknown) {
		return &Error{Code: ErrCodeUnavailable, Detail: err.Error(), Cause: err}
	}
	return &Error{Code: ErrCodeInternal, Cause: err}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError sends the OCI error JSON.
func writeError(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("Docker-Content-Digest")
	h.Del("Content-Length")
	if e.Code.Status == http.StatusServiceUnavailable || e.Code.Status == http.StatusTooManyRequests {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(e.Code.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Errors: []errorEntry{{Code: e.Code.Code, Message: e.Code.Message, Detail: e.Detail}}})
}
