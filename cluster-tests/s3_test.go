package clustertests

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"
)

// A minimal S3 client (AWS signature version 4) for test setup and checks
// against the harness's MinIO: create a bucket, list its keys.

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// s3EscapeQuery encodes a query component as SigV4 wants it (RFC 3986
// unreserved characters kept, everything else percent-encoded).
func s3EscapeQuery(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func (m *minioServer) s3Do(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Response, []byte, error) {
	now := time.Now().UTC()
	amzDate := now.Format("20060102T150405Z")
	day := now.Format("20060102")
	payloadHash := sha256Hex(body)

	keys := make([]string, 0, len(query))
	for k := range query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var q []string
	for _, k := range keys {
		vs := append([]string(nil), query[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			q = append(q, s3EscapeQuery(k)+"="+s3EscapeQuery(v))
		}
	}
	canonicalQuery := strings.Join(q, "&")

	signedHeaders := "host;x-amz-content-sha256;x-amz-date"
	canonicalHeaders := "host:" + m.Addr + "\n" +
		"x-amz-content-sha256:" + payloadHash + "\n" +
		"x-amz-date:" + amzDate + "\n"
	canonicalRequest := strings.Join([]string{method, path, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash}, "\n")
	scope := day + "/" + m.Region + "/s3/aws4_request"
	stringToSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + sha256Hex([]byte(canonicalRequest))
	key := hmacSHA256([]byte("AWS4"+m.SecretKey), day)
	key = hmacSHA256(key, m.Region)
	key = hmacSHA256(key, "s3")
	key = hmacSHA256(key, "aws4_request")
	signature := hex.EncodeToString(hmacSHA256(key, stringToSign))

	u := m.Endpoint() + path
	if canonicalQuery != "" {
		u += "?" + canonicalQuery
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
		m.AccessKey, scope, signedHeaders, signature))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// makeBucket creates a bucket, retrying while MinIO still warms up (it may
// answer 503 for a moment after /minio/health/live is 200).
func (m *minioServer) makeBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startupTimeout)
	defer cancel()
	for {
		resp, body, err := m.s3Do(ctx, http.MethodPut, "/"+name, nil, nil)
		if err == nil && resp.StatusCode == http.StatusOK {
			return
		}
		if err == nil && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("create bucket %s: %s\n%s", name, resp.Status, body)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("create bucket %s: MinIO not answering: %v", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// listKeys returns every object key in the bucket.
func (m *minioServer) listKeys(t testing.TB, bucket string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var keys []string
	token := ""
	for {
		q := url.Values{"list-type": {"2"}}
		if token != "" {
			q.Set("continuation-token", token)
		}
		resp, body, err := m.s3Do(ctx, http.MethodGet, "/"+bucket, q, nil)
		if err != nil {
			t.Fatalf("list bucket %s: %v", bucket, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("list bucket %s: %s\n%s", bucket, resp.Status, body)
		}
		var res struct {
			Contents []struct {
				Key string `xml:"Key"`
			} `xml:"Contents"`
			IsTruncated           bool   `xml:"IsTruncated"`
			NextContinuationToken string `xml:"NextContinuationToken"`
		}
		if err := xml.Unmarshal(body, &res); err != nil {
			t.Fatalf("list bucket %s: %v\n%s", bucket, err, body)
		}
		for _, c := range res.Contents {
			keys = append(keys, c.Key)
		}
		if !res.IsTruncated {
			return keys
		}
		token = res.NextContinuationToken
	}
}
