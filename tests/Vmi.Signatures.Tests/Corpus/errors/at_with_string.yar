/* Error case: at with a string operand (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abc" condition: $x at "0" }
