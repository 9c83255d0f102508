// Two-lane SHA-256 block function with the x86 SHA extensions (SHA-NI).
//
// SHA256RNDS2 computes two rounds whose result feeds the next two rounds,
// so one message stream is bound by the instruction's latency. Hashing two
// independent messages (two data blocks of a dm-verity tree) with their
// instructions interleaved lets the core overlap the two dependency chains.
// Written for intact from Intel's description of the SHA extensions.

#include "textflag.h"

// Lane A: state X1 (ABEF) X2 (CDGH), message words X3..X6, temporary X7.
// Lane B: state X9 (ABEF) X10 (CDGH), message words X11..X14, temporary X15.
// X0 is the implicit operand of SHA256RNDS2; X8 holds the byte-swap mask.

// Two rounds pairs (4 rounds) of one lane: T = M + K; rounds; rounds.
#define HALF1(M, T, koff, S0, S1, slot) \
	MOVOU koff(R8), T; \
	PADDD M, T; \
	MOVOU T, slot(SP); \
	MOVO T, X0; \
	SHA256RNDS2 X0, S0, S1

#define HALF2(slot, S0, S1) \
	MOVQ (slot+8)(SP), X0; \
	SHA256RNDS2 X0, S1, S0

// Message schedule: next += palignr(cur, prev); next = msg2(next, cur).
#define SCHED2(prev, cur, next, T) \
	MOVO cur, T; \
	PALIGNR $4, prev, T; \
	PADDD T, next; \
	SHA256MSG2 cur, next

// One group of four rounds on both lanes, interleaved.
#define ROUNDS(koff, MA, MB) \
	HALF1(MA, X7, koff, X1, X2, 64); \
	HALF1(MB, X15, koff, X9, X10, 80); \
	HALF2(64, X1, X2); \
	HALF2(80, X9, X10)

// func block2(sa, sb *[8]uint32, pa, pb *byte, n int)
TEXT ·block2(SB), NOSPLIT, $96-40
	MOVQ sa+0(FP), AX
	MOVQ sb+8(FP), BX
	MOVQ pa+16(FP), SI
	MOVQ pb+24(FP), DI
	MOVQ n+32(FP), CX
	LEAQ ·sha256K<>(SB), R8
	MOVOU ·sha256Swap<>(SB), X8
	TESTQ CX, CX
	JZ done

	// Load both states and reorder DCBA/HGFE into ABEF/CDGH.
	MOVOU (AX), X1
	MOVOU 16(AX), X2
	PSHUFD $0xb1, X1, X1
	PSHUFD $0x1b, X2, X2
	MOVO X1, X7
	PALIGNR $8, X2, X1
	PBLENDW $0xf0, X7, X2
	MOVOU (BX), X9
	MOVOU 16(BX), X10
	PSHUFD $0xb1, X9, X9
	PSHUFD $0x1b, X10, X10
	MOVO X9, X15
	PALIGNR $8, X10, X9
	PBLENDW $0xf0, X15, X10

loop:
	MOVOU X1, 0(SP)
	MOVOU X2, 16(SP)
	MOVOU X9, 32(SP)
	MOVOU X10, 48(SP)

	// Groups 0-3: load the message words.
	MOVOU 0(SI), X3
	PSHUFB X8, X3
	MOVOU 0(DI), X11
	PSHUFB X8, X11
	ROUNDS(0, X3, X11)

	MOVOU 16(SI), X4
	PSHUFB X8, X4
	MOVOU 16(DI), X12
	PSHUFB X8, X12
	ROUNDS(16, X4, X12)
	SHA256MSG1 X4, X3
	SHA256MSG1 X12, X11

	MOVOU 32(SI), X5
	PSHUFB X8, X5
	MOVOU 32(DI), X13
	PSHUFB X8, X13
	ROUNDS(32, X5, X13)
	SHA256MSG1 X5, X4
	SHA256MSG1 X13, X12

	MOVOU 48(SI), X6
	PSHUFB X8, X6
	MOVOU 48(DI), X14
	PSHUFB X8, X14
	ROUNDS(48, X6, X14)
	SCHED2(X5, X6, X3, X7)
	SCHED2(X13, X14, X11, X15)
	SHA256MSG1 X6, X5
	SHA256MSG1 X14, X13

	// Groups 4-12: the message words rotate through the four registers:
	// group g uses W[g]; it completes W[g+1] and starts W[g+3].
	ROUNDS(64, X3, X11)
	SCHED2(X6, X3, X4, X7)
	SCHED2(X14, X11, X12, X15)
	SHA256MSG1 X3, X6
	SHA256MSG1 X11, X14

	ROUNDS(80, X4, X12)
	SCHED2(X3, X4, X5, X7)
	SCHED2(X11, X12, X13, X15)
	SHA256MSG1 X4, X3
	SHA256MSG1 X12, X11

	ROUNDS(96, X5, X13)
	SCHED2(X4, X5, X6, X7)
	SCHED2(X12, X13, X14, X15)
	SHA256MSG1 X5, X4
	SHA256MSG1 X13, X12

	ROUNDS(112, X6, X14)
	SCHED2(X5, X6, X3, X7)
	SCHED2(X13, X14, X11, X15)
	SHA256MSG1 X6, X5
	SHA256MSG1 X14, X13

	ROUNDS(128, X3, X11)
	SCHED2(X6, X3, X4, X7)
	SCHED2(X14, X11, X12, X15)
	SHA256MSG1 X3, X6
	SHA256MSG1 X11, X14

	ROUNDS(144, X4, X12)
	SCHED2(X3, X4, X5, X7)
	SCHED2(X11, X12, X13, X15)
	SHA256MSG1 X4, X3
	SHA256MSG1 X12, X11

	ROUNDS(160, X5, X13)
	SCHED2(X4, X5, X6, X7)
	SCHED2(X12, X13, X14, X15)
	SHA256MSG1 X5, X4
	SHA256MSG1 X13, X12

	ROUNDS(176, X6, X14)
	SCHED2(X5, X6, X3, X7)
	SCHED2(X13, X14, X11, X15)
	SHA256MSG1 X6, X5
	SHA256MSG1 X14, X13

	ROUNDS(192, X3, X11)
	SCHED2(X6, X3, X4, X7)
	SCHED2(X14, X11, X12, X15)
	SHA256MSG1 X3, X6
	SHA256MSG1 X11, X14

	// Groups 13-15: no more message words to start.
	ROUNDS(208, X4, X12)
	SCHED2(X3, X4, X5, X7)
	SCHED2(X11, X12, X13, X15)

	ROUNDS(224, X5, X13)
	SCHED2(X4, X5, X6, X7)
	SCHED2(X12, X13, X14, X15)

	ROUNDS(240, X6, X14)

	// Add the saved state.
	MOVOU 0(SP), X7
	PADDD X7, X1
	MOVOU 16(SP), X7
	PADDD X7, X2
	MOVOU 32(SP), X15
	PADDD X15, X9
	MOVOU 48(SP), X15
	PADDD X15, X10

	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ loop

	// Reorder ABEF/CDGH back into DCBA/HGFE and store.
	PSHUFD $0x1b, X1, X1
	PSHUFD $0xb1, X2, X2
	MOVO X1, X7
	PBLENDW $0xf0, X2, X1
	PALIGNR $8, X7, X2
	MOVOU X1, (AX)
	MOVOU X2, 16(AX)
	PSHUFD $0x1b, X9, X9
	PSHUFD $0xb1, X10, X10
	MOVO X9, X15
	PBLENDW $0xf0, X10, X9
	PALIGNR $8, X15, X10
	MOVOU X9, (BX)
	MOVOU X10, 16(BX)

done:
	RET

// func cpuid(leaf, sub uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// Byte-swap mask for PSHUFB: big-endian message words.
DATA ·sha256Swap<>+0(SB)/8, $0x0405060700010203
DATA ·sha256Swap<>+8(SB)/8, $0x0c0d0e0f08090a0b
GLOBL ·sha256Swap<>(SB), RODATA|NOPTR, $16

// The SHA-256 round constants (FIPS 180-4, section 4.2.2).
DATA ·sha256K<>+0(SB)/8, $0x71374491428a2f98
DATA ·sha256K<>+8(SB)/8, $0xe9b5dba5b5c0fbcf
DATA ·sha256K<>+16(SB)/8, $0x59f111f13956c25b
DATA ·sha256K<>+24(SB)/8, $0xab1c5ed5923f82a4
DATA ·sha256K<>+32(SB)/8, $0x12835b01d807aa98
DATA ·sha256K<>+40(SB)/8, $0x550c7dc3243185be
DATA ·sha256K<>+48(SB)/8, $0x80deb1fe72be5d74
DATA ·sha256K<>+56(SB)/8, $0xc19bf1749bdc06a7
DATA ·sha256K<>+64(SB)/8, $0xefbe4786e49b69c1
DATA ·sha256K<>+72(SB)/8, $0x240ca1cc0fc19dc6
DATA ·sha256K<>+80(SB)/8, $0x4a7484aa2de92c6f
DATA ·sha256K<>+88(SB)/8, $0x76f988da5cb0a9dc
DATA ·sha256K<>+96(SB)/8, $0xa831c66d983e5152
DATA ·sha256K<>+104(SB)/8, $0xbf597fc7b00327c8
DATA ·sha256K<>+112(SB)/8, $0xd5a79147c6e00bf3
DATA ·sha256K<>+120(SB)/8, $0x1429296706ca6351
DATA ·sha256K<>+128(SB)/8, $0x2e1b213827b70a85
DATA ·sha256K<>+136(SB)/8, $0x53380d134d2c6dfc
DATA ·sha256K<>+144(SB)/8, $0x766a0abb650a7354
DATA ·sha256K<>+152(SB)/8, $0x92722c8581c2c92e
DATA ·sha256K<>+160(SB)/8, $0xa81a664ba2bfe8a1
DATA ·sha256K<>+168(SB)/8, $0xc76c51a3c24b8b70
DATA ·sha256K<>+176(SB)/8, $0xd6990624d192e819
DATA ·sha256K<>+184(SB)/8, $0x106aa070f40e3585
DATA ·sha256K<>+192(SB)/8, $0x1e376c0819a4c116
DATA ·sha256K<>+200(SB)/8, $0x34b0bcb52748774c
DATA ·sha256K<>+208(SB)/8, $0x4ed8aa4a391c0cb3
DATA ·sha256K<>+216(SB)/8, $0x682e6ff35b9cca4f
DATA ·sha256K<>+224(SB)/8, $0x78a5636f748f82ee
DATA ·sha256K<>+232(SB)/8, $0x8cc7020884c87814
DATA ·sha256K<>+240(SB)/8, $0xa4506ceb90befffa
DATA ·sha256K<>+248(SB)/8, $0xc67178f2bef9a3f7
GLOBL ·sha256K<>(SB), RODATA|NOPTR, $256
