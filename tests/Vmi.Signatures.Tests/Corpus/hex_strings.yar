/*
  Covers: hex strings — plain bytes, upper/lower case digits, ?? wildcards,
  nibble wildcards (?A and A?), fixed jumps [n], ranged jumps [n-m], open jumps
  [n-] and [-], long jumps (> 200 bytes, which yara splits into chained
  strings), adjacent jumps, alternatives (a|b), nested alternatives,
  alternatives containing wildcards and jumps, hex strings at offset 0 and at
  the end of the data, comments inside hex strings, private hex strings.
  Inputs: hex.bin (main), pe.bin, elf.bin, repeat.bin.
*/

rule hex_plain
{
    strings:
        $mz = { 4D 5A }
        $lower = { de ad be ef }
    condition:
        $mz at 0 and $lower
}

rule hex_wildcards
{
    strings:
        $w = { E8 ?? ?? ?? ?? 5D C3 }
    condition:
        #w >= 1
}

rule hex_nibbles
{
    strings:
        $n1 = { 4? 5? ?A }
        $n2 = { 1? ?2 3? }
    condition:
        $n1 and $n2
}

rule hex_fixed_jump
{
    strings:
        $j = { AA BB [4] CC DD }
    condition:
        $j
}

rule hex_range_jump
{
    strings:
        $j = { 11 22 [2-6] 33 44 }
    condition:
        #j >= 1
}

rule hex_open_jump
{
    strings:
        $j = { 55 66 [10-] 77 88 }
    condition:
        $j
}

rule hex_unbounded_jump
{
    strings:
        $j = { 99 AA [-] BB CC }
    condition:
        $j
}

rule hex_long_jump
{
    strings:
        $j = { DE AD BE EF [250-400] CA FE BA BE }
    condition:
        $j
}

rule hex_long_fixed_jump
{
    strings:
        $j = { 0F 1E 2D [300] 3C 4B 5A }
    condition:
        $j
}

rule hex_very_long_jump
{
    strings:
        $j = { F1 F2 F3 [1000-5000] F4 F5 F6 }
    condition:
        $j
}

rule hex_adjacent_jumps
{
    strings:
        $j = { 21 43 [1-2] [2] 65 87 }
    condition:
        $j
}

rule hex_alternatives
{
    strings:
        $a = { 01 02 ( 03 | 04 ) 05 }
    condition:
        #a == 2
}

rule hex_nested_alternatives
{
    strings:
        $a = { A1 ( B2 | C3 ( D4 | E5 ) | F6 ?? ) 07 }
    condition:
        #a >= 3
}

rule hex_alternative_with_jump
{
    strings:
        $a = { 5E ( 6F [2] 7A | 8B 9C ) AD }
    condition:
        $a
}

rule hex_alternative_multi_byte
{
    strings:
        $a = { ( 4D 5A 90 00 | 7F 45 4C 46 ) }
    condition:
        $a at 0
}

rule hex_comments
{
    strings:
        $c = {
            4D 5A   // MZ
            ??      /* anything */
            00
        }
    condition:
        $c
}

rule hex_at_end
{
    strings:
        $e = { 45 4E 44 21 }
    condition:
        $e at filesize - 4
}

rule hex_private
{
    strings:
        $p = { DE AD } private
        $q = { BE EF }
    condition:
        $p and $q
}

rule hex_absent
{
    strings:
        $x = { 13 37 13 37 13 37 13 37 }
    condition:
        not $x
}
