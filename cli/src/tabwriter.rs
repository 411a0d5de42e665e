//! Elastic tab stops, as Go's `text/tabwriter` lays them out (what kubectl's `describe` and
//! `rollout history` print through).
//!
//! Text is split into cells at tabs; the text after a line's last tab is not a cell and is
//! never padded. A *column block* is a run of consecutive lines that all have a cell in that
//! column; every cell of a block is padded to the block's widest cell plus `padding`. A
//! line with fewer cells ends the blocks of the columns it lacks, so a heading line between
//! two tables lets each table keep its own widths. kubectl uses minwidth 0, padding 2 and
//! spaces.
//!
//! Hand-written rather than a crate: it is the thirty lines of Go's algorithm this CLI
//! needs, and its output must match kubectl's byte for byte.

/// Lay out `text` with Go tabwriter's algorithm (minwidth 0, the given padding, spaces).
pub fn align(text: &str, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::new();
    let mut widths = Vec::new();
    format(&lines, 0, lines.len(), &mut widths, padding, &mut out);
    out
}

fn format(lines: &[Vec<&str>], mut line0: usize, line1: usize, widths: &mut Vec<usize>, pad: usize, out: &mut String) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + pad);
            this += 1;
        }
        widths.push(width);
        format(lines, line0, this, widths, pad, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for (i, line) in lines.iter().enumerate().take(to).skip(from) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(w) = widths.get(j).filter(|_| j + 1 < line.len()) {
                let n = w.saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', n));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn columns_align_per_block() {
        let text = "REVISION\tCHANGE-CAUSE\n1\t<none>\n10\tkubectl apply\n";
        assert_eq!(
            align(text, 2),
            "REVISION  CHANGE-CAUSE\n1         <none>\n10        kubectl apply\n"
        );
        // A line without cells ends the block: the second table has its own widths.
        let two = "a\tb\nlonger\tc\nheading\nx\ty\n";
        assert_eq!(align(two, 2), "a       b\nlonger  c\nheading\nx  y\n");
        // Nested columns.
        let nested = "  Labels:\tapp=web\n  Containers:\n   web:\n    Image:\tnginx\n    Port:\t<none>\n";
        assert_eq!(
            align(nested, 2),
            "  Labels:  app=web\n  Containers:\n   web:\n    Image:  nginx\n    Port:   <none>\n"
        );
    }
}
