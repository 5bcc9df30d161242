/*
  Covers: xor (all 256 keys, key 0 included), xor(n) single key, xor(a-b) key
  ranges (hex and decimal bounds), xor with wide and with ascii wide, xor with
  fullword and private; base64, base64wide, base64 combined with wide (wide is
  applied first), base64/base64wide with a custom 64-byte alphabet (with an
  escape inside the alphabet).
  Inputs: encoded.bin (main), text.bin.
*/

rule xor_any_key
{
    strings:
        $x = "This program cannot" xor
    condition:
        #x >= 4
}

rule xor_single_key
{
    strings:
        $x = "This program cannot" xor(0x20)
    condition:
        $x
}

rule xor_single_key_absent
{
    strings:
        $x = "This program cannot" xor(0x33)
    condition:
        $x
}

rule xor_range
{
    strings:
        $x = "This program cannot" xor(0x01-0x7f)
    condition:
        #x == 3
}

rule xor_range_decimal
{
    strings:
        $x = "This program cannot" xor(200-255)
    condition:
        $x
}

rule xor_wide
{
    strings:
        $x = "wide xor secret" xor wide
    condition:
        $x
}

rule xor_ascii_wide
{
    strings:
        $x = "dual xor secret" xor ascii wide
    condition:
        #x >= 2
}

rule xor_fullword_private
{
    strings:
        $x = "fwkey" xor fullword private
        $y = "This program cannot" xor(0x41)
    condition:
        $y and not $x
}

rule b64_plain
{
    strings:
        $b = "This program cannot be run" base64
    condition:
        #b >= 3
}

rule b64_wide_text
{
    strings:
        $b = "wide then base64" wide base64
    condition:
        $b
}

rule b64wide
{
    strings:
        $b = "base64wide payload" base64wide
    condition:
        $b
}

rule b64_and_b64wide
{
    strings:
        $b = "both encodings here" base64 base64wide
    condition:
        #b >= 2
}

rule b64_custom_alphabet
{
    strings:
        $b = "custom alphabet text" base64("!@#$%^&*(){}[].,|ABCDEFGHIJ\x09LMNOPQRSTUVWXYZabcdefghijklmnopqrstu")
    condition:
        $b
}

rule b64wide_custom_alphabet
{
    strings:
        $b = "custom wide alphabet" base64wide("!@#$%^&*(){}[].,|ABCDEFGHIJ\x09LMNOPQRSTUVWXYZabcdefghijklmnopqrstu")
    condition:
        $b
}

rule b64_absent
{
    strings:
        $b = "never encoded anywhere" base64
    condition:
        not $b
}
