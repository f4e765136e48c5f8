package meta

// Manifest is a manifest as the state machine keeps it: the exact bytes the
// client pushed plus what the registry needs without parsing them again.
type Manifest struct {
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	Raw       []byte `json:"raw"`
	// Blobs and Children are the digests this manifest references (layers and
	// config; index entries). They gate the PUT and feed GC marking.
	Blobs    []string `json:"blobs,omitempty"`
	Children []string `json:"children,omitempty"`
	// Subject, ArtifactType and Annotations feed the referrers API.
	Subject      string            `json:"subject,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Created      int64             `json:"created"`
}

// Size is the manifest's length in bytes.
func (m *Manifest) Size() int64 { return int64(len(m.Raw)) }

// Descriptor is the OCI descriptor of a referrer, stored per (repo, subject).
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Blob is one entry of the global blob index: where the bytes of a digest live.
type Blob struct {
	Digest  string `json:"digest"`
	Key     string `json:"key"`
	Size    int64  `json:"size"`
	Created int64  `json:"created"`
}

// Upload is an upload session. It lives in the state machine so that any node
// can continue it: Driver is the blob store's own state (object key, parts,
// staged tail), HashState the serialized digest state after Offset bytes.
type Upload struct {
	ID        string `json:"id"`
	Repo      string `json:"repo"`
	Offset    int64  `json:"offset"`
	Algorithm string `json:"algorithm,omitempty"`
	HashState []byte `json:"hashState,omitempty"`
	Driver    []byte `json:"driver,omitempty"`
	Started   int64  `json:"started"`
	Updated   int64  `json:"updated"`
}

// BlobUpload is where a blob store upload stands: bytes written so far and
// the driver's own state (object keys, multipart id, parts, staged tail) as
// opaque bytes kept in the upload session between requests. It is declared
// here, beside Upload, so that api can name the blob store's methods without
// importing blobstore (which aliases it as blobstore.Upload).
type BlobUpload struct {
	Size  int64
	State []byte
}

// Member is a node's addresses as the cluster records them. Raft's own
// configuration knows only raft addresses; this adds the rest.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raftAddr"`
	GRPCAddr string `json:"grpcAddr"`
	HTTPAddr string `json:"httpAddr"`
}
