package node

import (
	"context"
	"encoding/json"

	"github.com/flotilla/flotilla/api"
	"github.com/flotilla/flotilla/meta"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

// The node-to-node gRPC service. Messages are Go structs carried as JSON by
// a codec forced on both ends (no protoc step, no global codec
// registration); the service name carries the protocol version.
const rpcService = "flotilla.node.v1.Node"

type jsonCodec struct{}

// rawMessage is a message sent as its own bytes rather than as JSON (a
// command already in its log encoding, which holds manifest bytes that
// JSON would base64 a second time).
type rawMessage interface {
	wireBytes() []byte
	setWireBytes([]byte)
}

// maxMessageSize bounds one node-to-node message: a command carries at most
// one manifest (4 MiB by default) plus its fields.
const maxMessageSize = 64 << 20

func (jsonCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(m.wireBytes())}, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (jsonCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(rawMessage); ok {
		m.setWireBytes(data.Materialize())
		return nil
	}
	return json.Unmarshal(data.Materialize(), v)
}

func (jsonCodec) Name() string { return "json" }

// Messages.
type (
	applyRequest struct {
		// Command is meta.Command in its log encoding.
		Command []byte `json:"command"`
	}
	// applyResponse is JSON.
	applyResponse struct {
		Result meta.Result `json:"result"`
	}
	readIndexRequest struct {
		// Applied is the asking node's applied index.
		Applied uint64 `json:"applied"`
	}
	readIndexResponse struct {
		Index uint64 `json:"index"`
		// Stable is the leader's stable index (raftstore, lease.go).
		Stable uint64 `json:"stable"`
	}
	// leaseMessage is what a follower sends on its lease stream.
	leaseMessage struct {
		ID      string `json:"id"`
		Seq     uint64 `json:"seq"`
		Applied uint64 `json:"applied"`
	}
	joinRequest struct {
		Member meta.Member `json:"member"`
		Voter  bool        `json:"voter"`
	}
	removeRequest struct {
		ID string `json:"id"`
	}
	transferRequest struct {
		// ID of the node to hand leadership to; empty: any voter.
		ID string `json:"id"`
	}
	empty         struct{}
	statusRequest struct{}
)

func (r *applyRequest) wireBytes() []byte     { return r.Command }
func (r *applyRequest) setWireBytes(b []byte) { r.Command = b }

// rpcServer is what the gRPC service calls into (implemented by *Node).
type rpcServer interface {
	rpcApply(ctx context.Context, req *applyRequest) (*applyResponse, error)
	rpcReadIndex(ctx context.Context, req *readIndexRequest) (*readIndexResponse, error)
	rpcJoin(ctx context.Context, req *joinRequest) (*empty, error)
	rpcRemove(ctx context.Context, req *removeRequest) (*empty, error)
	rpcTransfer(ctx context.Context, req *transferRequest) (*empty, error)
	rpcStatus(ctx context.Context) (*api.ClusterStatus, error)
	rpcLease(stream grpc.ServerStream) error
}

func unary[Req any, Resp any](name string, call func(rpcServer, context.Context, *Req) (*Resp, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			req := new(Req)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, r any) (any, error) { return call(srv.(rpcServer), ctx, r.(*Req)) }
			if ic == nil {
				return h(ctx, req)
			}
			return ic(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + rpcService + "/" + name}, h)
		},
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: rpcService,
	HandlerType: (*rpcServer)(nil),
	Methods: []grpc.MethodDesc{
		unary("Apply", func(s rpcServer, ctx context.Context, r *applyRequest) (*applyResponse, error) {
			return s.rpcApply(ctx, r)
		}),
		unary("ReadIndex", func(s rpcServer, ctx context.Context, r *readIndexRequest) (*readIndexResponse, error) {
			return s.rpcReadIndex(ctx, r)
		}),
		unary("Join", func(s rpcServer, ctx context.Context, r *joinRequest) (*empty, error) { return s.rpcJoin(ctx, r) }),
		unary("Remove", func(s rpcServer, ctx context.Context, r *removeRequest) (*empty, error) { return s.rpcRemove(ctx, r) }),
		unary("TransferLeadership", func(s rpcServer, ctx context.Context, r *transferRequest) (*empty, error) {
			return s.rpcTransfer(ctx, r)
		}),
		unary("Status", func(s rpcServer, ctx context.Context, _ *statusRequest) (*api.ClusterStatus, error) {
			return s.rpcStatus(ctx)
		}),
	},
	Streams: []grpc.StreamDesc{leaseStream},
}

// leaseStream: a follower's read lease. The follower sends a leaseMessage
// whenever its applied index moves and at least every quarter lease; the
// leader answers with raftstore.LeaseGrant whenever there is news.
var leaseStream = grpc.StreamDesc{
	StreamName:    "Lease",
	ServerStreams: true,
	ClientStreams: true,
	Handler: func(srv any, stream grpc.ServerStream) error {
		return srv.(rpcServer).rpcLease(stream)
	},
}

// Client is a gRPC client of one node's service; the CLI uses it too.
type Client struct {
	conn *grpc.ClientConn
}

// Dial connects to a node's gRPC address (no I/O until the first call).
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	opts = append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.ForceCodecV2(jsonCodec{}),
		grpc.MaxCallRecvMsgSize(maxMessageSize), grpc.MaxCallSendMsgSize(maxMessageSize))}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) call(ctx context.Context, method string, req, resp any) error {
	return c.conn.Invoke(ctx, "/"+rpcService+"/"+method, req, resp)
}

// Status returns the node's view of the cluster.
func (c *Client) Status(ctx context.Context) (*api.ClusterStatus, error) {
	var st api.ClusterStatus
	return &st, c.call(ctx, "Status", &statusRequest{}, &st)
}

// Remove removes a node from the cluster (forwarded to the leader).
func (c *Client) Remove(ctx context.Context, id string) error {
	return c.call(ctx, "Remove", &removeRequest{ID: id}, &empty{})
}

// TransferLeadership asks the leader to hand over to id (empty: any voter).
func (c *Client) TransferLeadership(ctx context.Context, id string) error {
	return c.call(ctx, "TransferLeadership", &transferRequest{ID: id}, &empty{})
}

func (c *Client) join(ctx context.Context, req *joinRequest) error {
	return c.call(ctx, "Join", req, &empty{})
}

func (c *Client) apply(ctx context.Context, cmd []byte) (*meta.Result, error) {
	var resp applyResponse
	if err := c.call(ctx, "Apply", &applyRequest{Command: cmd}, &resp); err != nil {
		return nil, err
	}
	return &resp.Result, nil
}

func (c *Client) readIndex(ctx context.Context, applied uint64) (*readIndexResponse, error) {
	var resp readIndexResponse
	err := c.call(ctx, "ReadIndex", &readIndexRequest{Applied: applied}, &resp)
	return &resp, err
}

func (c *Client) lease(ctx context.Context) (grpc.ClientStream, error) {
	return c.conn.NewStream(ctx, &leaseStream, "/"+rpcService+"/Lease")
}
