package bolt

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// diskRecord is how a Record is stored: without what its key and other
// fields already say (the ID is the key, the domain is the address's),
// without empty envelope fields, and, for every record of a message but
// the first, without the fields of the message (envelope, per-message DSN
// fields, returned headers), which Base names the record to take from.
// Its fields shadow the Record's of the same JSON name.
type diskRecord struct {
	*store.Record
	ID     string `json:"id,omitempty"`
	Domain string `json:"domain,omitempty"`
	// Base is the ID of the record with this record's message fields.
	Base string `json:"base,omitempty"`

	Received           time.Time       `json:"received,omitzero"`
	Envelope           *diskEnvelope   `json:"envelope,omitempty"`
	ReportingMTA       string          `json:"reporting_mta,omitempty"`
	OriginalEnvelopeID string          `json:"original_envelope_id,omitempty"`
	DSNGateway         string          `json:"dsn_gateway,omitempty"`
	ReceivedFromMTA    string          `json:"received_from_mta,omitempty"`
	ArrivalDate        string          `json:"arrival_date,omitempty"`
	Original           *parse.Original `json:"original,omitempty"`
	Feedback           *parse.Feedback `json:"feedback,omitempty"`
	ParseError         string          `json:"parse_error,omitempty"`
}

// diskEnvelope is Envelope with every field omitted when empty.
type diskEnvelope struct {
	MailFrom string   `json:"mail_from,omitempty"`
	RcptTo   []string `json:"rcpt_to,omitempty"`
	ClientIP string   `json:"client_ip,omitempty"`
	Helo     string   `json:"helo,omitempty"`
	VERP     string   `json:"verp,omitempty"`
	Verified bool     `json:"verified,omitempty"`
	Campaign string   `json:"campaign,omitempty"`
	Relay    bool     `json:"relay,omitempty"`
	Source   string   `json:"source,omitempty"`
}

// diskRecordOf returns what is stored of rec, with env to hold its
// envelope. base is the ID of the first record of rec's message when rec
// is not that record, else "".
func diskRecordOf(rec *store.Record, base string, env *diskEnvelope) diskRecord {
	d := diskRecord{Record: rec, Base: base}
	if base == "" {
		*env = diskEnvelope(rec.Envelope)
		d.Received, d.Envelope = rec.Received, env
		d.ReportingMTA, d.OriginalEnvelopeID, d.DSNGateway = rec.ReportingMTA, rec.OriginalEnvelopeID, rec.DSNGateway
		d.ReceivedFromMTA, d.ArrivalDate = rec.ReceivedFromMTA, rec.ArrivalDate
		d.Original, d.Feedback, d.ParseError = rec.Original, rec.Feedback, rec.ParseError
	}
	return d
}

// recordJSONCap is the room encodeRecord makes for a record's JSON when
// it is given no buffer: 90 % of the records of the sisimai samples take
// less than 1.5 KB, 99 % less than 2.5 KB.
const recordJSONCap = 2 << 10

// encodeRecord returns the stored form of rec: the JSON of its diskRecord,
// as json.Marshal writes it (appendDiskRecord), compressed. base is the
// ID of the first record of rec's message when rec is not that record,
// else "". The JSON is written in *buf, which is grown as needed and kept
// for the next call (the writer's txWriter.recJSON), or in a new buffer
// if buf is nil; the stored form is a new slice that does not alias it.
func encodeRecord(rec *store.Record, base string, buf *[]byte) ([]byte, error) {
	var env diskEnvelope
	d := diskRecordOf(rec, base, &env)
	var dst []byte
	if buf != nil {
		dst = (*buf)[:0]
	} else {
		dst = make([]byte, 0, recordJSONCap)
	}
	v, err := appendDiskRecord(dst, &d)
	if err != nil {
		return nil, fmt.Errorf("encoding record: %w", err)
	}
	if buf != nil {
		*buf = v
	}
	return s2Encode(recordS2, recordDict(), v), nil
}

// maxRecordBytes caps a decompressed record. The largest fields come from
// a message's header section, which the decoder caps at 1 MiB by default
// (parse.DefaultLimits()), so more means a damaged value.
const maxRecordBytes = 16 << 20

// recordJSONOf returns the JSON of the stored record value v: v itself for
// a plain JSON value, else v decompressed.
func recordJSONOf(v []byte) ([]byte, error) {
	if len(v) == 0 {
		return nil, errors.New("empty value")
	}
	var j []byte
	var err error
	switch v[0] {
	case recordJSON:
		return v, nil
	case recordZstd1:
		j, err = unzstd(v[1:], recordDictID1, maxRecordBytes)
	case recordS2:
		j, err = s2Decode(recordDict(), v[1:], maxRecordBytes)
	default:
		return nil, fmt.Errorf("unknown codec %d", v[0])
	}
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	return j, nil
}

// decodeRecord reads the record stored under key in the records bucket b.
func decodeRecord(b *bbolt.Bucket, key, v []byte) (store.Record, error) {
	r, base, err := decodeOwn(key, v)
	if err != nil || base == "" {
		return r, err
	}
	bk, err := decodeID(base)
	if err != nil {
		return store.Record{}, fmt.Errorf("decoding record %s: base: %w", encodeID(key), err)
	}
	bv := b.Get(bk)
	if bv == nil {
		return store.Record{}, fmt.Errorf("decoding record %s: base record %s missing", encodeID(key), base)
	}
	m, _, err := decodeOwn(bk, bv)
	if err != nil {
		return store.Record{}, fmt.Errorf("decoding record %s: base: %w", encodeID(key), err)
	}
	messageFields(&r, &m)
	return r, nil
}

// messageFields copies the fields of the message from m, the first
// record of r's message, to r.
func messageFields(r, m *store.Record) {
	r.Received, r.Envelope = m.Received, m.Envelope
	r.ReportingMTA, r.OriginalEnvelopeID, r.DSNGateway = m.ReportingMTA, m.OriginalEnvelopeID, m.DSNGateway
	r.ReceivedFromMTA, r.ArrivalDate = m.ReceivedFromMTA, m.ArrivalDate
	r.Original, r.Feedback, r.ParseError = m.Original, m.Feedback, m.ParseError
}

// decodeOwn decodes one stored record without following its base, and
// returns the base's ID.
func decodeOwn(key, v []byte) (store.Record, string, error) {
	var r store.Record
	d := diskRecord{Record: &r}
	j, err := recordJSONOf(v)
	if err != nil {
		return store.Record{}, "", fmt.Errorf("decoding record %s: %w", encodeID(key), err)
	}
	if err := json.Unmarshal(j, &d); err != nil {
		return store.Record{}, "", fmt.Errorf("decoding record %s: %w", encodeID(key), err)
	}
	if d.Envelope != nil {
		r.Envelope = store.Envelope(*d.Envelope)
	}
	r.Received, r.ReportingMTA, r.OriginalEnvelopeID, r.DSNGateway = d.Received, d.ReportingMTA, d.OriginalEnvelopeID, d.DSNGateway
	r.ReceivedFromMTA, r.ArrivalDate = d.ReceivedFromMTA, d.ArrivalDate
	r.Original, r.Feedback, r.ParseError = d.Original, d.Feedback, d.ParseError
	r.ID = encodeID(key)
	r.Domain = store.AddrDomain(r.Addr)
	return r, d.Base, nil
}
