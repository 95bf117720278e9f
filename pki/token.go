package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// Token is a single-use join token: romanad stores ID with a hash of
// Secret; the agent sends both, and checks romanad's CA against CAPin.
//
// Its text form is "rmn1.ID.SECRET.CAPIN": ID 8 and SECRET 32 lowercase hex
// digits (128 random bits), CAPIN the CA's Fingerprint (64 hex digits).
type Token struct {
	ID     string
	Secret string
	CAPin  string
}

const tokenVersion = "rmn1"

var (
	tokenIDRE     = regexp.MustCompile(`^[0-9a-f]{8}$`)
	tokenSecretRE = regexp.MustCompile(`^[0-9a-f]{32}$`)
	tokenPinRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// NewToken returns a random token pinning ca.
func NewToken(ca *CA) (Token, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return Token{}, fmt.Errorf("join token: %w", err)
	}
	return Token{ID: hex.EncodeToString(b[:4]), Secret: hex.EncodeToString(b[4:]), CAPin: Fingerprint(ca.Cert)}, nil
}

// String is the token's text form.
func (t Token) String() string {
	return strings.Join([]string{tokenVersion, t.ID, t.Secret, t.CAPin}, ".")
}

// ParseToken parses a token's text form. Its error never echoes the secret.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != tokenVersion {
		return Token{}, fmt.Errorf("join token: want %s.ID.SECRET.CAPIN (as printed by romana host add or romana host token)", tokenVersion)
	}
	t := Token{ID: parts[1], Secret: parts[2], CAPin: parts[3]}
	switch {
	case !tokenIDRE.MatchString(t.ID):
		return Token{}, fmt.Errorf("join token: ID must be 8 lowercase hex digits")
	case !tokenSecretRE.MatchString(t.Secret):
		return Token{}, fmt.Errorf("join token %s: secret must be 32 lowercase hex digits", t.ID)
	case !tokenPinRE.MatchString(t.CAPin):
		return Token{}, fmt.Errorf("join token %s: CA pin must be 64 lowercase hex digits", t.ID)
	}
	return t, nil
}

// SecretHash is what romanad stores instead of the secret.
func SecretHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches compares a secret with a stored hash in constant time.
func SecretMatches(secret, hash string) bool {
	h := SecretHash(secret)
	return subtle.ConstantTimeCompare([]byte(h), []byte(hash)) == 1
}
