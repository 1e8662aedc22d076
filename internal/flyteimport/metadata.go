package flyteimport

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
)

// metadata is a row's stored flyteidl2.cacheservice.Metadata; the zero value
// (no metadata stored) answers empty for everything.
type metadata struct {
	msg *flytecache.Metadata
}

// decodeMetadata reads a row's metadata column. NULL and empty bytes are no
// metadata (an empty message is what proto3 encodes as nothing). Unknown
// fields are kept by the decoder, so a newer Flyte's additions do not fail
// the import.
func decodeMetadata(b []byte) (metadata, error) {
	if len(b) == 0 {
		return metadata{}, nil
	}
	msg := &flytecache.Metadata{}
	if err := proto.Unmarshal(b, msg); err != nil {
		return metadata{}, fmt.Errorf("metadata is not a flyteidl2.cacheservice.Metadata message: %w", err)
	}
	// A timestamp out of protobuf's range is damage, not a date to store.
	if ts := msg.GetCreatedAt(); ts != nil && !ts.IsValid() {
		return metadata{}, fmt.Errorf("metadata's created_at is not a valid timestamp: %w", ts.CheckValid())
	}
	return metadata{msg: msg}, nil
}

func (m metadata) source() *flytecore.Identifier { return m.msg.GetSourceIdentifier() }
func (m metadata) sourceOrg() string             { return m.source().GetOrg() }
func (m metadata) sourceProject() string         { return m.source().GetProject() }
func (m metadata) sourceDomain() string          { return m.source().GetDomain() }
func (m metadata) sourceName() string            { return m.source().GetName() }
func (m metadata) sourceVersion() string         { return m.source().GetVersion() }

// labels are the key map's pairs; nil when there are none.
func (m metadata) labels() map[string]string {
	v := m.msg.GetKeyMap().GetValues()
	if len(v) == 0 {
		return nil
	}
	return v
}

// createdAt is the stored created_at, or zero when there is none.
func (m metadata) createdAt() time.Time {
	ts := m.msg.GetCreatedAt()
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// sourceBytes is the source identifier serialized, all six fields and any
// unknown ones, for the store to keep as Flyte sent it; nil when absent.
func (m metadata) sourceBytes() ([]byte, error) {
	if m.source() == nil {
		return nil, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.source())
	if err != nil {
		return nil, fmt.Errorf("encode source identifier: %w", err)
	}
	if b == nil {
		b = []byte{} // present but empty is not absent
	}
	return b, nil
}
