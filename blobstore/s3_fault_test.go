package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/flotilla/flotilla/blobstore"
)

// hookReader yields data and calls hook once, after `at` bytes.
type hookReader struct {
	data []byte
	at   int
	hook func()
	off  int
}

func (h *hookReader) Read(p []byte) (int, error) {
	if h.hook != nil && h.off >= h.at {
		h.hook()
		h.hook = nil
	}
	if h.off >= len(h.data) {
		return 0, io.EOF
	}
	if h.hook != nil && h.off+len(p) > h.at {
		p = p[:h.at-h.off]
	}
	n := copy(p, h.data[h.off:])
	h.off += n
	return n, nil
}

func randomBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	_, _ = mrand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// TestS3MinioOutage stops MinIO in the middle of an Append: the Append
// fails (it does not hang: every call has a deadline), calls made during
// the outage fail without claiming the object is missing, and once MinIO
// is back on the same data the previous state continues and completes to
// exactly the right bytes, leaving nothing else behind.
func TestS3MinioOutage(t *testing.T) {
	m := startMinio(t)
	bucket := newBucketName()
	d := newS3(t, minioConfig(m, bucket))
	raw, err := minio.NewCore(m.addr, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioPassword, "")})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		before int // bytes committed before the outage
	}{
		{"outage after a tail", 100},
		{"outage after parts", testPartSize + 100},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			id := fmt.Sprintf("outage%d", i)
			first := randomBytes(byte(2*i), tc.before)
			second := randomBytes(byte(2*i+1), 2*testPartSize+1234)

			u0, err := d.StartUpload(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			u1, err := d.Append(ctx, u0, bytes.NewReader(first))
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Committed(ctx, u0, u1); err != nil {
				t.Fatal(err)
			}

			// MinIO dies once the Append has read more than a part.
			r := &hookReader{data: second, at: testPartSize + 10, hook: m.stop}
			actx, acancel := context.WithTimeout(ctx, 45*time.Second)
			_, err = d.Append(actx, u1, r)
			acancel()
			if err == nil {
				t.Fatal("Append during the outage: no error")
			}
			t.Logf("Append during the outage: %v", err)

			sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = d.Stat(sctx, "blobs/"+id)
			scancel()
			if err == nil || errors.Is(err, blobstore.ErrNotFound) {
				t.Fatalf("Stat during the outage: %v, want an error other than ErrNotFound", err)
			}
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = d.Complete(cctx, u1)
			ccancel()
			if err == nil {
				t.Fatal("Complete during the outage: no error")
			}

			if err := m.start(ctx); err != nil {
				t.Fatalf("restart minio: %v", err)
			}

			// The state from before the outage is intact.
			u2, err := d.Append(ctx, u1, bytes.NewReader(second))
			if err != nil {
				t.Fatalf("Append after the outage: %v", err)
			}
			if err := d.Committed(ctx, u1, u2); err != nil {
				t.Fatal(err)
			}
			key, err := d.Complete(ctx, u2)
			if err != nil {
				t.Fatalf("Complete after the outage: %v", err)
			}
			rc, err := d.Open(ctx, key, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append(slices.Clone(first), second...)) {
				t.Fatalf("blob has %d bytes, want %d, or different bytes", len(got), len(first)+len(second))
			}

			keys, err := d.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys, []string{key}) {
				t.Errorf("store holds %q, want only %q", keys, key)
			}
			// MinIO lists bucket-wide unfinished uploads from memory only, so
			// ask for this object's uploads explicitly (read from disk).
			res, err := raw.ListMultipartUploads(ctx, bucket, "blobs/"+id, "", "", "", 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Uploads) > 0 {
				t.Errorf("unfinished multipart uploads left: %+v", res.Uploads)
			}
			if err := d.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		})
	}
}
