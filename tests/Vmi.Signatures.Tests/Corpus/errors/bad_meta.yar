/* Error case: metadata value must be a string, integer or boolean (yara 4.2.3 rejects this file; so must we). */
rule a { meta: x = 1.5 condition: true }
