package ipam

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

// Credential records (never watch events: eventKind ignores pki/):
//
//	pki/tokens/ID        api.JoinToken: a join token's host, secret hash and expiry
//	pki/certs/SERIAL     api.CertRecord: a certificate romanad issued
//	pki/revoked/SERIAL   api.CertRecord with Revoked set
func (k keys) tokens() string              { return k.p + "pki/tokens/" }
func (k keys) token(id string) string      { return k.p + "pki/tokens/" + id }
func (k keys) certs() string               { return k.p + "pki/certs/" }
func (k keys) cert(serial string) string   { return k.p + "pki/certs/" + serial }
func (k keys) revoked() string             { return k.p + "pki/revoked/" }
func (k keys) revokedCert(s string) string { return k.p + "pki/revoked/" + s }

// CreateToken stores a join token for host; the host must exist.
func (r *Registry) CreateToken(ctx context.Context, t api.JoinToken) error {
	op := "create join token for host " + t.Host
	_, err := r.commit(ctx, op,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(r.k.host(t.Host)), ">", 0), absent(r.k.token(t.ID))},
		[]clientv3.Op{clientv3.OpPut(r.k.token(t.ID), mustJSON(t))})
	if err == errRetry {
		if _, gerr := r.GetHost(ctx, t.Host); gerr != nil {
			return gerr
		}
		return api.Errorf(api.ReasonConflict, "%s: token id %s is taken; try again", op, t.ID)
	}
	return err
}

// ConsumeToken deletes the join token id and returns it: a token is used
// once, whatever happens next. Expiry and the secret are the caller's to
// check. A missing token is NotFound.
func (r *Registry) ConsumeToken(ctx context.Context, id string) (api.JoinToken, error) {
	resp, err := r.cli.Delete(ctx, r.k.token(id), clientv3.WithPrevKV())
	if err != nil {
		return api.JoinToken{}, storeErr("use join token "+id, err)
	}
	if len(resp.PrevKvs) == 0 {
		return api.JoinToken{}, api.Errorf(api.ReasonNotFound, "join token %s not found (already used, expired or never issued)", id)
	}
	return decode[api.JoinToken](resp.PrevKvs[0])
}

// PruneTokens deletes join tokens that expired before now.
func (r *Registry) PruneTokens(ctx context.Context, now time.Time) (int, error) {
	resp, err := r.cli.Get(ctx, r.k.tokens(), clientv3.WithPrefix())
	if err != nil {
		return 0, storeErr("list join tokens", err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		t, err := decode[api.JoinToken](kv)
		if err == nil && !now.After(t.Expires) {
			continue
		}
		if _, err := r.commit(ctx, "prune join token", []clientv3.Cmp{unchanged(string(kv.Key), kv)},
			[]clientv3.Op{clientv3.OpDelete(string(kv.Key))}); err == nil {
			n++
		}
	}
	return n, nil
}

// RecordCert records a certificate romanad issued, so that it can be listed
// and revoked by identity.
func (r *Registry) RecordCert(ctx context.Context, c api.CertRecord) error {
	_, err := r.cli.Put(ctx, r.k.cert(c.Serial), mustJSON(c))
	return storeErr("record certificate "+c.Serial, err)
}

// ListCerts returns the issued certificates on record, revoked ones marked.
func (r *Registry) ListCerts(ctx context.Context) ([]api.CertRecord, error) {
	resp, err := r.read(ctx, "list certificates",
		clientv3.OpGet(r.k.certs(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.revoked(), clientv3.WithPrefix()))
	if err != nil {
		return nil, err
	}
	revoked := map[string]api.CertRecord{}
	for _, kv := range rangeKVs(resp, 1) {
		if c, err := decode[api.CertRecord](kv); err == nil {
			revoked[c.Serial] = c
		}
	}
	var out []api.CertRecord
	for _, kv := range rangeKVs(resp, 0) {
		c, err := decode[api.CertRecord](kv)
		if err != nil {
			r.log.Warn("skipping undecodable certificate record", "key", string(kv.Key), "error", err)
			continue
		}
		if rc, ok := revoked[c.Serial]; ok {
			c.Revoked, c.Reason = rc.Revoked, rc.Reason
			delete(revoked, c.Serial)
		}
		out = append(out, c)
	}
	for _, c := range revoked { // revoked by serial, never issued here (external CA)
		out = append(out, c)
	}
	return out, nil
}

// Revoke revokes the certificates of serials (any, also of an external CA)
// and every recorded certificate of identities; it returns what it revoked.
// Revocations stay until the certificate would have expired anyway.
func (r *Registry) Revoke(ctx context.Context, serials, identities []string, reason string, now time.Time) ([]api.CertRecord, error) {
	all, err := r.ListCerts(ctx)
	if err != nil {
		return nil, err
	}
	bySerial := map[string]api.CertRecord{}
	for _, c := range all {
		bySerial[c.Serial] = c
	}
	want := map[string]api.CertRecord{}
	for _, s := range serials {
		c, ok := bySerial[s]
		if !ok {
			c = api.CertRecord{Serial: s}
		}
		want[s] = c
	}
	for _, id := range identities {
		for _, c := range all {
			if c.Identity == id {
				want[c.Serial] = c
			}
		}
	}
	var out []api.CertRecord
	for _, c := range want {
		if c.Revoked != nil {
			continue
		}
		at := now
		c.Revoked, c.Reason = &at, reason
		if _, err := r.cli.Put(ctx, r.k.revokedCert(c.Serial), mustJSON(c)); err != nil {
			return out, storeErr("revoke certificate "+c.Serial, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Revoked returns the revoked serials and the store revision they were read at.
func (r *Registry) Revoked(ctx context.Context) (map[string]api.CertRecord, int64, error) {
	resp, err := r.cli.Get(ctx, r.k.revoked(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, storeErr("list revoked certificates", err)
	}
	out := map[string]api.CertRecord{}
	for _, kv := range resp.Kvs {
		out[revokedSerial(r, kv)] = decodeRevoked(kv)
	}
	return out, resp.Header.Revision, nil
}

// WatchRevoked calls fn for every certificate revoked (or un-revoked: a
// deleted record) after revision rev, until ctx ends or the watch breaks.
func (r *Registry) WatchRevoked(ctx context.Context, rev int64, fn func(serial string, c api.CertRecord, revoked bool)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // closes the etcd watch on any return
	r.revocationWatches.Add(1)
	r.revocationWatchesOpened.Add(1)
	defer r.revocationWatches.Add(-1)
	for wr := range r.cli.Watch(ctx, r.k.revoked(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return storeErr("watch revoked certificates", err)
		}
		for _, ev := range wr.Events {
			fn(revokedSerial(r, ev.Kv), decodeRevoked(ev.Kv), ev.Type == clientv3.EventTypePut)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return api.Errorf(api.ReasonUnavailable, "watch revoked certificates: the store closed the stream")
}

func revokedSerial(r *Registry, kv *mvccpb.KeyValue) string {
	return string(kv.Key)[len(r.k.revoked()):]
}

// decodeRevoked decodes a revocation; an undecodable one still revokes
// its serial (the key is what counts).
func decodeRevoked(kv *mvccpb.KeyValue) api.CertRecord {
	c, _ := decode[api.CertRecord](kv)
	return c
}
