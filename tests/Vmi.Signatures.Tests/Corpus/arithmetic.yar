/*
  Covers: filesize, KB/MB size suffixes, entrypoint (deprecated keyword: yara
  4.2.3 warns, and it is defined only for PE and ELF files, undefined
  otherwise), uint8/16/32, int8/16/32, uint16be/uint32be/int16be/int32be/
  uint8be/int8be, reads past the end (undefined), integer literals (decimal,
  hex 0x, octal 0o), floats, unary minus, arithmetic + - * \ % with
  precedence and parentheses, runtime division by zero (undefined), bitwise
  & | ^ ~ << >>, comparisons < <= > >= == !=, boolean and/or/not with
  undefined operands, true/false literals, defined.
  Inputs: pe.bin (main), elf.bin, text.bin, empty.bin, tiny.bin.
*/

rule ar_filesize_small
{
    condition:
        filesize < 2MB and filesize <= 64KB
}

rule ar_filesize_exact_pe
{
    condition:
        filesize == 1024
}

rule ar_filesize_zero
{
    condition:
        filesize == 0
}

rule ar_entrypoint_defined
{
    condition:
        defined entrypoint
}

rule ar_entrypoint_value
{
    condition:
        entrypoint == 0x210 or entrypoint == 0xb0
}

rule ar_entrypoint_undefined
{
    condition:
        not defined entrypoint
}

rule ar_entrypoint_bytes
{
    condition:
        uint8(entrypoint) == 0x55
}

rule ar_mz_pe
{
    condition:
        uint16(0) == 0x5A4D and uint32(uint32(0x3C)) == 0x00004550
}

rule ar_elf
{
    condition:
        uint32(0) == 0x464C457F and uint8(4) == 2
}

rule ar_big_endian
{
    condition:
        uint16be(0) == 0x4D5A and uint32be(0) == 0x4D5A9000 and uint8be(0) == 0x4D
}

rule ar_signed
{
    condition:
        int8(0x40) == -2 and int16(0x40) == -2 and int32(0x40) < 0 and uint32(0x40) == 0xFFFFFFFE + 0x1 - 1 + 0 * 5
}

rule ar_signed_be
{
    condition:
        int16be(0x44) == -2 and int32be(0x44) == -131072 and int8be(0x44) == -1
}

rule ar_read_past_end
{
    condition:
        not defined uint32(filesize) and not defined uint8(filesize) and defined uint8(filesize - 1)
}

rule ar_read_past_end_false
{
    condition:
        uint32(filesize - 2) == 0 or uint32(filesize - 2) != 0
}

rule ar_literals
{
    condition:
        0x10 == 16 and 0o20 == 16 and 1KB == 1024 and 1MB == 1048576 and -5 < 0
}

rule ar_arithmetic
{
    condition:
        (1 + 2) * 3 == 9 and 1 + 2 * 3 == 7 and 10 - 4 - 3 == 3 and 17 \ 5 == 3 and 17 % 5 == 2 and -17 \ 5 == -3 and -17 % 5 == -2
}

rule ar_arithmetic_filesize
{
    condition:
        filesize \ 2 * 2 + filesize % 2 == filesize and (filesize - 1) % 1024 >= 0
}

rule ar_runtime_div_zero
{
    condition:
        (1 \ (filesize - filesize)) == 0 or true
}

rule ar_runtime_div_zero_undefined
{
    condition:
        not defined (1 \ (filesize - filesize))
}

rule ar_runtime_mod_zero
{
    condition:
        not (5 % (filesize - filesize) == 0)
}

rule ar_bitwise
{
    condition:
        (0xF0 & 0x3C) == 0x30 and (0xF0 | 0x0F) == 0xFF and (0xFF ^ 0x0F) == 0xF0 and ~0 == -1 and 1 << 4 == 16 and 256 >> 4 == 16
}

rule ar_bitwise_data
{
    condition:
        (uint16(0) & 0xFF) == 0x4D and (uint16(0) >> 8) == 0x5A and (uint32(0) ^ uint32(0)) == 0
}

rule ar_shift_large
{
    condition:
        1 << 63 < 0 and (1 << 64) == 0 and (-8 >> 1) == -4
}

rule ar_comparisons
{
    condition:
        1 < 2 and 2 <= 2 and 3 > 2 and 3 >= 3 and 4 != 5 and not (4 == 5)
}

rule ar_floats
{
    condition:
        1.5 + 1.5 == 3 and 2.5 > 2 and 7 \ 2.0 == 3.5 and -0.5 < 0
}

rule ar_int_overflow
{
    condition:
        0x7FFFFFFFFFFFFFFF + filesize < 0 or 0x7FFFFFFFFFFFFFFF + filesize > 0
}

rule ar_undefined_and_or
{
    condition:
        uint32(filesize) == 1 or true
}

rule ar_undefined_not
{
    condition:
        not (uint32(filesize) == 1)
}

rule ar_undefined_and
{
    condition:
        true and uint32(filesize) == 1
}

rule ar_true_false
{
    condition:
        true and not false
}
