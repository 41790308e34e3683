package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	maxBodyBytes = 1 << 20
	// produceTimeout bounds a write end to end: produce plus waiting for the
	// consumer to apply it.
	produceTimeout = 10 * time.Second
)

// producer is the part of *kgo.Client the HTTP side needs.
type producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
}

type server struct {
	store *Store
	prod  producer
}

func newHandler(store *Store, prod producer) http.Handler {
	s := &server{store: store, prod: prod}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.handleHealthz)
	mux.HandleFunc("/readyz", s.handleReadyz)
	mux.HandleFunc("/user", s.handleUser)
	mux.HandleFunc("/users", s.handleUsers)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	return mux
}

func (s *server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	writeRaw(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

func (s *server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	if !s.store.Ready() {
		writeRaw(w, http.StatusServiceUnavailable, []byte(`{"status":"catching up"}`))
		return
	}
	writeRaw(w, http.StatusOK, []byte(`{"status":"ready"}`))
}

func (s *server) handleUsers(w http.ResponseWriter, r *http.Request) {
	if !allowMethods(w, r, http.MethodGet, http.MethodHead) || !s.requireReady(w) {
		return
	}
	writeRaw(w, http.StatusOK, s.store.AllJSON())
}

func (s *server) handleUser(w http.ResponseWriter, r *http.Request) {
	if !allowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete) ||
		!s.requireReady(w) {
		return
	}
	switch r.Method {
	case http.MethodPut:
		s.putUser(w, r)
	case http.MethodDelete:
		s.deleteUser(w, r)
	default:
		s.getUser(w, r)
	}
}

func (s *server) getUser(w http.ResponseWriter, r *http.Request) {
	email := r.URL.Query().Get("email")
	if email == "" {
		writeError(w, http.StatusBadRequest, "query parameter 'email' is required")
		return
	}
	v, ok := s.store.Get(email)
	if !ok {
		writeError(w, http.StatusNotFound, "user not found")
		return
	}
	writeRaw(w, http.StatusOK, v)
}

// user is the stored document. Field order fixes the JSON layout.
type user struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

func (s *server) putUser(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > maxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "request body exceeds 1 MiB")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, "request body exceeds 1 MiB")
			return
		}
		writeError(w, http.StatusBadRequest, "could not read request body")
		return
	}

	u, msg := parseUser(r.URL.Query().Get("email"), body)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	value, err := marshalCompact(u)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "could not encode user")
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), produceTimeout)
	defer cancel()
	if status, msg := s.write(ctx, &kgo.Record{Key: []byte(u.Email), Value: value}); status != 0 {
		writeError(w, status, msg)
		return
	}
	writeRaw(w, http.StatusOK, value)
}

func (s *server) deleteUser(w http.ResponseWriter, r *http.Request) {
	email := r.URL.Query().Get("email")
	if email == "" {
		writeError(w, http.StatusBadRequest, "query parameter 'email' is required")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), produceTimeout)
	defer cancel()
	// A nil Value is encoded as a null value: a real tombstone that
	// compaction eventually removes. An empty (non-nil) slice would be a
	// regular, empty record that lives forever.
	if status, msg := s.write(ctx, &kgo.Record{Key: []byte(email), Value: nil}); status != 0 {
		writeError(w, status, msg)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// write produces rec and waits until the consumer has applied it, so that a
// read issued after the reply observes the write. It returns a non-zero HTTP
// status and message on failure.
//
// Produce with a promise is used rather than ProduceSync so that the deadline
// is honoured exactly: franz-go cannot abandon a record that is already in
// flight (doing so would break idempotent sequencing), so ProduceSync may
// outlive its context. Here the handler stops waiting at the deadline; the
// record's fate is then unknown, which the error says.
func (s *server) write(ctx context.Context, rec *kgo.Record) (int, string) {
	done := make(chan error, 1) // buffered: the promise may fire after we stop waiting
	s.prod.Produce(ctx, rec, func(_ *kgo.Record, err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			return http.StatusServiceUnavailable, "produce failed: " + err.Error()
		}
	case <-ctx.Done():
		return http.StatusServiceUnavailable, "produce timed out; the write may or may not have been applied"
	}
	// Receiving from done orders the promise's writes of Partition and Offset
	// before these reads.
	if err := s.store.WaitApplied(ctx, rec.Partition, rec.Offset); err != nil {
		return http.StatusServiceUnavailable, fmt.Sprintf(
			"write stored at %d/%d but not yet applied locally: %v", rec.Partition, rec.Offset, err)
	}
	return 0, ""
}

// parseUser validates a PUT body. The key is the query's email, or the body's
// when the query has none; if both are given they must match. It returns a
// non-empty message when the request is invalid.
func parseUser(queryEmail string, body []byte) (user, string) {
	if !json.Valid(body) {
		return user{}, "request body is not valid JSON"
	}
	var obj map[string]json.RawMessage
	// Unmarshal fails for arrays, strings, numbers and booleans, and leaves
	// obj nil for a literal null.
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return user{}, "request body must be a JSON object"
	}

	var u user
	rawEmail, hasEmail := obj["email"]
	if hasEmail {
		e, ok := jsonString(rawEmail)
		if !ok {
			return user{}, "'email' must be a string"
		}
		if queryEmail != "" && e != queryEmail {
			return user{}, "'email' in body does not match the 'email' query parameter"
		}
		u.Email = e
	}
	if queryEmail != "" {
		u.Email = queryEmail
	}
	if u.Email == "" {
		return user{}, "'email' is required and must not be empty"
	}

	// A missing name is an empty one, as in the Python service; a present one
	// (null included) must be a string.
	if rawName, ok := obj["name"]; ok {
		if u.Name, ok = jsonString(rawName); !ok {
			return user{}, "'name' must be a string"
		}
	}
	return u, ""
}

// jsonString decodes raw as a JSON string. It rejects null explicitly:
// encoding/json would otherwise decode null into a string as "".
func jsonString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// marshalCompact encodes v without a trailing newline and without escaping
// <, > and & (which json.Marshal does for embedding in HTML).
func marshalCompact(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// requireReady replies 503 until the initial replay has caught up: serving
// reads from a partial view, or accepting writes whose read-your-writes wait
// would sit behind the whole replay, would both be wrong.
func (s *server) requireReady(w http.ResponseWriter) bool {
	if s.store.Ready() {
		return true
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "catching up with the topic, not ready yet")
	return false
}

func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	return false
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := marshalCompact(map[string]string{"error": msg})
	writeRaw(w, status, b)
}
