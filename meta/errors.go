package meta

import (
	"errors"
	"fmt"
)

// Code identifies a domain error. Codes cross node boundaries inside command
// results (a follower forwards a write and gets the leader's result back), so
// errors are carried as codes and turned back into sentinel values with
// CodeError. The names follow the OCI distribution-spec error codes where one
// exists.
type Code string

const (
	CodeOK                  Code = ""
	CodeNameUnknown         Code = "NAME_UNKNOWN"
	CodeManifestUnknown     Code = "MANIFEST_UNKNOWN"
	CodeManifestBlobUnknown Code = "MANIFEST_BLOB_UNKNOWN"
	CodeBlobUnknown         Code = "BLOB_UNKNOWN"
	CodeBlobUploadUnknown   Code = "BLOB_UPLOAD_UNKNOWN"
	CodeRangeInvalid        Code = "RANGE_INVALID"
	CodeTagConflict         Code = "TAG_CONFLICT"
	CodeDenied              Code = "DENIED"
	CodeInvalidCommand      Code = "INVALID_COMMAND"
)

// Sentinel errors, one per code. Compare with errors.Is.
var (
	ErrNameUnknown         = &CodeError{Code: CodeNameUnknown, Msg: "repository name not known to registry"}
	ErrManifestUnknown     = &CodeError{Code: CodeManifestUnknown, Msg: "manifest unknown"}
	ErrManifestBlobUnknown = &CodeError{Code: CodeManifestBlobUnknown, Msg: "manifest references a blob unknown to the repository"}
	ErrBlobUnknown         = &CodeError{Code: CodeBlobUnknown, Msg: "blob unknown to registry"}
	ErrUploadUnknown       = &CodeError{Code: CodeBlobUploadUnknown, Msg: "blob upload unknown to registry"}
	ErrRangeInvalid        = &CodeError{Code: CodeRangeInvalid, Msg: "upload offset does not match the session"}
	ErrTagConflict         = &CodeError{Code: CodeTagConflict, Msg: "tag does not point at the expected digest"}
	ErrDenied              = &CodeError{Code: CodeDenied, Msg: "requested access to the resource is denied"}
	ErrInvalidCommand      = &CodeError{Code: CodeInvalidCommand, Msg: "invalid command"}
)

func registerCodes(errs ...*CodeError) map[Code]*CodeError {
	m := make(map[Code]*CodeError, len(errs))
	for _, e := range errs {
		m[e.Code] = e
	}
	return m
}

// CodeError is a domain error identified by its Code. Detail, when set, says
// which object was at fault (for example the missing digest).
type CodeError struct {
	Code   Code
	Msg    string
	Detail string
}

func (e *CodeError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s: %s", e.Msg, e.Detail)
	}
	return e.Msg
}

// Is makes errors.Is(err, ErrBlobUnknown) true for any CodeError of that code,
// whatever its Detail.
func (e *CodeError) Is(target error) bool {
	var t *CodeError
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code
}

// WithDetail returns a copy of e carrying detail.
func (e *CodeError) WithDetail(detail string) *CodeError {
	c := *e
	c.Detail = detail
	return &c
}

// ErrorFor turns a code and detail carried in a Result back into an error.
// Unknown codes still produce an error, never nil.
func ErrorFor(code Code, detail string) error {
	if code == CodeOK {
		return nil
	}
	known := registerCodes(ErrNameUnknown, ErrManifestUnknown, ErrManifestBlobUnknown, ErrBlobUnknown,
		ErrUploadUnknown, ErrRangeInvalid, ErrTagConflict, ErrDenied, ErrInvalidCommand)
	if e, ok := known[code]; ok {
		return e.WithDetail(detail)
	}
	return &CodeError{Code: code, Msg: "error " + string(code), Detail: detail}
}
