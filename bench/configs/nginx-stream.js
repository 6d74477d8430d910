// Preread handler for nginx stream: find the Host header in the request
// head and store it (lowercased, port stripped) in $ddport_host.
function preread(s) {
    var head = '';
    s.on('upload', function (data, flags) {
        head += data;
        var end = head.indexOf('\r\n\r\n');
        if (end < 0 && !flags.last && head.length < 16384) {
            return; // need more bytes
        }
        var m = /\r\n[Hh][Oo][Ss][Tt][ \t]*:[ \t]*([^\r\n:]*)/.exec(head);
        if (m) {
            s.variables.ddport_host = m[1].trim().toLowerCase();
        }
        s.done();
    });
}
export default { preread };
