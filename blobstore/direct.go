package blobstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Zero-copy blob reads. A registry that serves blob bytes from elsewhere
// spends most of its CPU moving them through its own memory (one read and
// one write system call per buffer). directBody hands that copy to the
// destination's ReadFrom: when the destination is the client's TCP
// connection, the kernel moves the bytes itself (splice from the object
// store's socket, sendfile from a file).

// directBody reads n bytes from src after the bytes in head.
type directBody struct {
	head   []byte    // already read past the response headers
	src    io.Reader // *net.TCPConn or *os.File, positioned
	n      int64     // bytes left in src
	closer io.Closer
	stop   func() bool // ends the context watch, if any
	// whole: the bytes are the entire object (read from its start, and the
	// store said that is all of it).
	whole bool
}

func (b *directBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.src.Read(p)
	b.n -= int64(n)
	if err == io.EOF && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// WriteTo lets io.Copy(w, body) use w's ReadFrom on the raw source.
func (b *directBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(b.head) > 0 {
		n, err := w.Write(b.head)
		total += int64(n)
		b.head = b.head[n:]
		if err != nil {
			return total, err
		}
	}
	lr := &io.LimitedReader{R: b.src, N: b.n}
	var n int64
	var err error
	if rf, ok := w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(lr)
	} else {
		n, err = io.Copy(w, lr)
	}
	b.n = lr.N
	total += n
	if err == nil && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return total, err
}

func (b *directBody) Close() error {
	if b.stop != nil {
		b.stop()
	}
	return b.closer.Close()
}

// errDirect: the object store answered the direct GET with something else
// than the bytes asked for; the caller takes the regular path, which
// reports errors properly.
var errDirect = errors.New("direct read not possible")

// getDirect GETs length bytes at offset of a presigned plain-http URL on a
// connection of its own, and returns a body that reads from that
// connection's socket.
func getDirect(ctx context.Context, u string, host string, requestURI string, offset, length int64) (io.ReadCloser, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		conn.Close()
		return nil, errDirect
	}
	// A cancelled request (the client went away) unblocks any read.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (io.ReadCloser, error) {
		stop()
		conn.Close()
		return nil, err
	}
	// From the start, the whole object is asked for (a plain GET is the
	// store's cheapest); its length is checked below all the same.
	rng := ""
	if offset > 0 {
		rng = "Range: bytes=" + strconv.FormatInt(offset, 10) + "-" + strconv.FormatInt(offset+length-1, 10) + "\r\n"
	}
	req := "GET " + requestURI + " HTTP/1.1\r\nHost: " + host + "\r\n" + rng +
		"User-Agent: flotilla\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(err)
	}
	if !(resp.StatusCode == http.StatusPartialContent && offset > 0) && !(resp.StatusCode == http.StatusOK && offset == 0) {
		return fail(fmt.Errorf("%w: %s answered %s", errDirect, u, resp.Status))
	}
	if resp.ContentLength != length || len(resp.TransferEncoding) > 0 {
		return fail(fmt.Errorf("%w: %s answered %d bytes (%v), asked for %d", errDirect, u, resp.ContentLength, resp.TransferEncoding, length))
	}
	head := make([]byte, min(int64(br.Buffered()), length))
	if _, err := io.ReadFull(br, head); err != nil {
		return fail(err)
	}
	// Without a Range the answer is the whole object, and its length was
	// checked to be length.
	return &directBody{head: head, src: tcp, n: length - int64(len(head)), closer: conn, stop: stop, whole: offset == 0}, nil
}
